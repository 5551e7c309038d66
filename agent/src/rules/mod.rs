//! Rule packs: YAML data (`rules/*.yaml` at the top of the repository, embedded at build time,
//! extendable from `/etc/origin-agent/rules.d/`) that map server-side log lines to events and
//! causes.
