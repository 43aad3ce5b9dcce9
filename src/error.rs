//! Raising SQL errors with a proper SQLSTATE (PostgREST maps it to the HTTP status).

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

/// Raises an ERROR; never returns.
pub fn raise(code: PgSqlErrorCode, message: impl Into<String>) -> ! {
    report(ErrorReport::new(code, message.into(), "flux"))
}

/// Raises an ERROR with a hint telling the reader what to do about it.
pub fn raise_with_hint(code: PgSqlErrorCode, message: impl Into<String>, hint: &str) -> ! {
    report(ErrorReport::new(code, message.into(), "flux").set_hint(hint))
}

fn report(report: ErrorReport) -> ! {
    report.report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}
