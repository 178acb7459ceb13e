//! How a command ends, and the runtime it runs on: `block_on` maps the ending to an exit code.
use std::process::ExitCode;

use crate::kernel::attach::AttachError;

/// Exit code for a problem with the environment or a flag value (privileges, tracefs, kernel
/// support, a filter clap could not check alone).
const EXIT_ENVIRONMENT: u8 = 2;

/// How a command ends when it does not succeed.
pub enum Exit {
    /// A flag value clap could not check alone.
    Usage(String),
    /// Privileges, tracefs, kernel support: what the user must change.
    Environment(String),
    Runtime(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Exit {
    fn from(e: E) -> Self {
        Exit::Runtime(e.into())
    }
}

impl Exit {
    /// What the user must change is said as such; a broken object is a runtime failure.
    pub fn attach(e: AttachError) -> Self {
        match e {
            AttachError::Environment(_) | AttachError::PermissionDenied(_) => {
                Exit::Environment(e.to_string())
            }
            AttachError::Load(e) => Exit::Runtime(e.into()),
        }
    }
}

/// Runs `task` on a single-threaded runtime and maps how it ended to an exit code.
pub fn block_on(task: impl std::future::Future<Output = Result<(), Exit>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Exit::Environment(msg) | Exit::Usage(msg)) => {
            log::error!("{msg}");
            ExitCode::from(EXIT_ENVIRONMENT)
        }
        Err(Exit::Runtime(e)) => {
            log::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
