//! Privileged integration tests; see tests/.
