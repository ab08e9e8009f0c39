//! Where the reader's lines come from: a window onto the dump that holds the current chunk's
//! complete lines and the partial line after them.
//!
//! [`Copied`] reads any `Read` into a buffer of its own (only a chunk of the input is in
//! memory at a time); [`Borrowed`] shows the same windows directly on a dump that is already
//! in memory, so 35 MB are not copied once more. Both show exactly the same bytes at each
//! step — `Borrowed` emulates a `Read` of a byte slice into the `Copied` buffer (a slice's
//! `read` fills all the room it is given) — so the reader sees the same lines and reports
//! the same errors, at the same line numbers, whichever one it is given. This module moves
//! bytes only; it must not look inside them.

use std::io::Read;

use crate::inventory::InventoryError;

/// A window onto the dump: `filled` bytes are visible; the reader consumes complete lines
/// from its front and asks for more at its back.
pub(super) trait Window {
    /// Makes more input visible after the `filled` bytes already there, at most `cap` in
    /// all; returns how many bytes came (0: the input has ended).
    fn fill(&mut self, source: &str, filled: usize, cap: usize) -> Result<usize, InventoryError>;
    /// The `filled` visible bytes.
    fn bytes(&self, filled: usize) -> &[u8];
    /// Drops the first `n` of the `filled` visible bytes (lines the reader is done with).
    fn consume(&mut self, n: usize, filled: usize);
}

/// A window over a buffer that a `Read` fills.
pub(super) struct Copied<R> {
    input: R,
    buf: Vec<u8>,
}

impl<R: Read> Copied<R> {
    /// A window whose buffer holds `cap` bytes.
    pub(super) fn new(input: R, cap: usize) -> Copied<R> {
        Copied {
            input,
            buf: vec![0; cap],
        }
    }
}

impl<R: Read> Window for Copied<R> {
    fn fill(&mut self, source: &str, filled: usize, cap: usize) -> Result<usize, InventoryError> {
        let Some(room) = self.buf.get_mut(filled..cap) else {
            return Ok(0);
        };
        loop {
            match self.input.read(room) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(InventoryError::Io {
                        input: source.to_owned(),
                        error: e.to_string(),
                    });
                }
            }
        }
    }

    fn bytes(&self, filled: usize) -> &[u8] {
        self.buf.get(..filled).unwrap_or(&[])
    }

    fn consume(&mut self, n: usize, filled: usize) {
        self.buf.copy_within(n..filled, 0);
    }
}

/// A window sliding over a dump already in memory.
pub(super) struct Borrowed<'a> {
    input: &'a [u8],
    /// Where the visible bytes start in `input`.
    base: usize,
}

impl<'a> Borrowed<'a> {
    /// A window at the start of `input`.
    pub(super) fn new(input: &'a [u8]) -> Borrowed<'a> {
        Borrowed { input, base: 0 }
    }
}

impl Window for Borrowed<'_> {
    fn fill(&mut self, _: &str, filled: usize, cap: usize) -> Result<usize, InventoryError> {
        // What `<&[u8] as Read>::read` would give a buffer with `cap - filled` bytes of room.
        let left = self.input.len().saturating_sub(self.base + filled);
        Ok(left.min(cap.saturating_sub(filled)))
    }

    fn bytes(&self, filled: usize) -> &[u8] {
        self.input.get(self.base..self.base + filled).unwrap_or(&[])
    }

    fn consume(&mut self, n: usize, _: usize) {
        self.base += n;
    }
}
