//! Exit codes (DESIGN.md; sysexits-style) and the error type the commands return.

use std::fmt;

/// Documented exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// 0: ok / ready.
    Ok = 0,
    /// 1: not ready, a check or verification failed.
    NotReady = 1,
    /// 2: usage error.
    Usage = 2,
    /// 3: an operation failed (kernel, netlink, apply error); the journal is consistent.
    OperationFailed = 3,
    /// 65: bad input data (malformed dump or config).
    DataErr = 65,
    /// 66: an input is missing.
    NoInput = 66,
    /// 69: a required tool or kernel feature is unavailable.
    Unavailable = 69,
}

impl ExitCode {
    /// Numeric code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The code for a number (an answer from the daemon); unknown numbers are operation
    /// failures.
    pub fn from_code(n: u8) -> ExitCode {
        [
            ExitCode::Ok,
            ExitCode::NotReady,
            ExitCode::Usage,
            ExitCode::OperationFailed,
            ExitCode::DataErr,
            ExitCode::NoInput,
            ExitCode::Unavailable,
        ]
        .into_iter()
        .find(|c| c.code() == n)
        .unwrap_or(ExitCode::OperationFailed)
    }

    /// Stable name used in JSON errors.
    pub fn as_str(self) -> &'static str {
        match self {
            ExitCode::Ok => "ok",
            ExitCode::NotReady => "not-ready",
            ExitCode::Usage => "usage",
            ExitCode::OperationFailed => "operation-failed",
            ExitCode::DataErr => "bad-input",
            ExitCode::NoInput => "input-missing",
            ExitCode::Unavailable => "unavailable",
        }
    }
}

/// An error with the exit code it maps to.
#[derive(Debug)]
pub struct CliError {
    /// Exit code.
    pub code: ExitCode,
    /// Message (already names file and line where there is one).
    pub message: String,
    /// Input file, if the error is about one.
    pub input: Option<String>,
    /// Line in it.
    pub line: Option<u32>,
}

impl CliError {
    /// A new error.
    pub fn new(code: ExitCode, message: impl Into<String>) -> CliError {
        CliError {
            code,
            message: message.into(),
            input: None,
            line: None,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<ipvsmig_engine::inventory::InventoryError> for CliError {
    fn from(e: ipvsmig_engine::inventory::InventoryError) -> CliError {
        use ipvsmig_engine::inventory::InventoryError as E;
        let (input, line) = match &e {
            E::Malformed { input, line, .. } => (Some(input.clone()), Some(*line)),
            E::Truncated { input, line, .. } => (Some(input.clone()), Some(*line)),
            E::Io { input, .. } => (Some(input.clone()), None),
        };
        let code = if matches!(e, E::Io { .. }) {
            ExitCode::NoInput
        } else {
            ExitCode::DataErr
        };
        CliError {
            code,
            message: e.to_string(),
            input,
            line,
        }
    }
}

impl From<ipvsmig_host::iptables::HostError> for CliError {
    fn from(e: ipvsmig_host::iptables::HostError) -> CliError {
        use ipvsmig_host::iptables::HostError as E;
        match e {
            E::Inventory(i) => i.into(),
            E::ToolMissing { .. } => CliError::new(ExitCode::Unavailable, e.to_string()),
            E::ToolFailed { .. } => CliError::new(ExitCode::Unavailable, e.to_string()),
        }
    }
}
