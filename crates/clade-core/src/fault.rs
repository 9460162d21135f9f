//! Whose failure an error is: the system's own, or one its caller can act on.

/// An error that says whether it is the system's own failure (its storage, its disk, a
/// corrupted row) rather than one its caller can act on (a name taken, a thing not found, a
/// limit reached). A model is told the second in the error's own words, and of the first only
/// that it happened: the cause, which may name paths and drivers, is for the operator.
pub trait Fault: std::error::Error {
    fn is_internal(&self) -> bool;
}
