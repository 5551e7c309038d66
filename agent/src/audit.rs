//! The one-shot audit: discover, observe, read the log window, diagnose, report.
