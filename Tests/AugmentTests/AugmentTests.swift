import Testing
@testable import Augment
