//! The C ABI over the Sextant runtime that the iOS Swift package wraps (with a C header and an
//! XCFramework build script beside it). Nothing is implemented yet.
