//! Reports: the audit's result as a typed value (the JSON contract) and its renderings for a
//! terminal, for JSON consumers and for Nagios-style monitoring.
