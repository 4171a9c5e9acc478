import Testing
@testable import Datasets

@Test func imageHoldsItsShape() {
    let image = Image(width: 2, height: 1, channels: 3, pixels: [1, 2, 3, 4, 5, 6])
    #expect(image.pixels.count == 6)
}
