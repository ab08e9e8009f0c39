//! Host side (placeholder)
