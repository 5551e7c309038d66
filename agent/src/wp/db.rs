//! The site's database, read and (only for a throwaway copy) written with the pure-Rust MySQL
//! client. The agent connects as `root` over the server's unix socket (Debian's `unix_socket`
//! authentication), so the site's own password is never read. The socket must belong to root
//! or the `mysql` account; names from `wp-config.php` are checked before they are quoted into
//! SQL; every call has a deadline; a value read is capped in size.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mysql::prelude::Queryable;

use crate::host::{FileKind, Host, HostExt};

/// Read and write deadline of one statement.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of one option value read (`active_plugins` is a few KiB).
const MAX_VALUE: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("no database socket found (tried {0})")]
    NoSocket(String),
    #[error("{0}: the socket belongs to uid {1}, not root or mysql: not trusted")]
    Untrusted(PathBuf, u32),
    #[error("`{0}` is not a plain database or table name")]
    BadName(String),
    #[error("the database is not on this host ({0})")]
    Remote(String),
    #[error("database: {0}")]
    Mysql(String),
}

impl From<mysql::Error> for DbError {
    fn from(e: mysql::Error) -> Self {
        DbError::Mysql(e.to_string())
    }
}

/// `name` quoted as an identifier, when it is a plain name (letters, digits, `_`, `$`, `-`).
pub fn ident(name: &str) -> Result<String, DbError> {
    let plain = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '-'));
    if plain {
        Ok(format!("`{name}`"))
    } else {
        Err(DbError::BadName(crate::wp::printable(name, 64)))
    }
}

/// The uid of the `mysql` account, from `/etc/passwd` through the host.
fn mysql_uid(host: &dyn Host) -> Option<u32> {
    let passwd = host.read_text(Path::new("/etc/passwd")).ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == "mysql").then_some(())?;
        f.nth(1)?.parse().ok()
    })
}

/// The database socket for a site: `DB_HOST`'s `localhost:/path` form, else the server's
/// discovered socket, else Debian's default. It must be a socket owned by root or mysql.
pub fn socket_for(
    host: &dyn Host,
    db_host: &crate::wp::config::DbHost,
    discovered: Option<&Path>,
) -> Result<PathBuf, DbError> {
    use crate::wp::config::DbHost;
    let candidates: Vec<PathBuf> = match db_host {
        DbHost::Socket(Some(p)) => vec![PathBuf::from(p)],
        DbHost::Tcp { host: h, .. } if !db_host.is_local() => {
            return Err(DbError::Remote(crate::wp::printable(h, 64)))
        }
        _ => discovered
            .map(Path::to_path_buf)
            .into_iter()
            .chain(["/run/mysqld/mysqld.sock", "/var/lib/mysql/mysql.sock"].map(PathBuf::from))
            .collect(),
    };
    let mysql = mysql_uid(host);
    for path in &candidates {
        let Ok(meta) = host.metadata(path) else {
            continue;
        };
        if meta.kind != FileKind::Socket {
            continue;
        }
        if meta.uid != 0 && Some(meta.uid) != mysql {
            return Err(DbError::Untrusted(path.clone(), meta.uid));
        }
        return Ok(path.clone());
    }
    Err(DbError::NoSocket(
        candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    ))
}

/// A root connection over a local socket.
pub struct Db {
    conn: mysql::Conn,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Db")
    }
}

/// The options the agent reads from a site's database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SiteOptions {
    pub active_plugins: Vec<String>,
    pub sitewide_plugins: Vec<String>,
    pub template: Option<String>,
    pub stylesheet: Option<String>,
    /// Why an option could not be read (a value that is not a valid serialized array).
    pub problems: Vec<String>,
}

impl Db {
    pub fn connect(socket: &Path) -> Result<Db, DbError> {
        let opts = mysql::OptsBuilder::new()
            .socket(Some(socket.to_string_lossy()))
            .user(Some("root"))
            .prefer_socket(true)
            .tcp_connect_timeout(Some(IO_TIMEOUT))
            .read_timeout(Some(IO_TIMEOUT))
            .write_timeout(Some(IO_TIMEOUT));
        Ok(Db {
            conn: mysql::Conn::new(opts)?,
        })
    }

    fn option_values(
        &mut self,
        db: &str,
        table: &str,
        key_col: &str,
        value_col: &str,
        keys: &[&str],
    ) -> Result<Vec<(String, Vec<u8>)>, DbError> {
        let list = keys
            .iter()
            .map(|k| format!("'{k}'"))
            .collect::<Vec<_>>()
            .join(",");
        let q = format!(
            "SELECT {key_col}, LEFT({value_col}, {MAX_VALUE}) FROM {}.{} WHERE {key_col} IN ({list}) LIMIT 10",
            ident(db)?,
            ident(table)?
        );
        Ok(self.conn.query::<(String, Vec<u8>), _>(q)?)
    }

    /// `active_plugins`, `template`, `stylesheet` (and `active_sitewide_plugins` on multisite).
    pub fn site_options(
        &mut self,
        db: &str,
        prefix: &str,
        multisite: bool,
    ) -> Result<SiteOptions, DbError> {
        let mut out = SiteOptions::default();
        let rows = self.option_values(
            db,
            &format!("{prefix}options"),
            "option_name",
            "option_value",
            &["active_plugins", "template", "stylesheet"],
        )?;
        for (name, value) in rows {
            match name.as_str() {
                "active_plugins" => match crate::wp::serial::plugin_list(&value) {
                    Ok(list) => out.active_plugins = list,
                    Err(e) => out.problems.push(format!("active_plugins: {e}")),
                },
                "template" => {
                    out.template = Some(crate::wp::printable(&String::from_utf8_lossy(&value), 64))
                }
                "stylesheet" => {
                    out.stylesheet =
                        Some(crate::wp::printable(&String::from_utf8_lossy(&value), 64))
                }
                _ => {}
            }
        }
        if multisite {
            let rows = self.option_values(
                db,
                &format!("{prefix}sitemeta"),
                "meta_key",
                "meta_value",
                &["active_sitewide_plugins"],
            );
            match rows {
                Ok(rows) => {
                    for (_, value) in rows.into_iter().take(1) {
                        match crate::wp::serial::plugin_keys(&value) {
                            Ok(list) => out.sitewide_plugins = list,
                            Err(e) => out.problems.push(format!("active_sitewide_plugins: {e}")),
                        }
                    }
                }
                Err(e) => out.problems.push(e.to_string()),
            }
        }
        Ok(out)
    }

    /// The tables of `db` whose names start with `prefix`.
    pub fn tables(&mut self, db: &str, prefix: &str) -> Result<Vec<String>, DbError> {
        let all: Vec<String> = self
            .conn
            .query(format!("SHOW TABLES FROM {}", ident(db)?))?;
        Ok(all.into_iter().filter(|t| t.starts_with(prefix)).collect())
    }

    /// Does a database of this name exist?
    pub fn database_exists(&mut self, db: &str) -> Result<bool, DbError> {
        let rows: Vec<String> = self.conn.exec(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
            (db,),
        )?;
        Ok(!rows.is_empty())
    }

    /// Copies `tables` of `from` into the new database `to` on the server itself
    /// (`CREATE TABLE … LIKE` + `INSERT … SELECT`): the live database is only read.
    pub fn copy_tables(&mut self, from: &str, to: &str, tables: &[String]) -> Result<(), DbError> {
        if self.database_exists(to)? {
            return Err(DbError::Mysql(format!("database {to} already exists")));
        }
        self.conn.query_drop(format!(
            "CREATE DATABASE {} CHARACTER SET utf8mb4",
            ident(to)?
        ))?;
        for t in tables {
            let (src, dst) = (
                format!("{}.{}", ident(from)?, ident(t)?),
                format!("{}.{}", ident(to)?, ident(t)?),
            );
            self.conn
                .query_drop(format!("CREATE TABLE {dst} LIKE {src}"))?;
            self.conn
                .query_drop(format!("INSERT INTO {dst} SELECT * FROM {src}"))?;
        }
        Ok(())
    }

    /// A user that may use `db` only, from the local socket.
    pub fn create_user(&mut self, user: &str, password: &str, db: &str) -> Result<(), DbError> {
        ident(user)?;
        if !password.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(DbError::BadName("password".into()));
        }
        self.conn.query_drop(format!(
            "CREATE USER '{user}'@'localhost' IDENTIFIED BY '{password}'"
        ))?;
        self.conn.query_drop(format!(
            "GRANT ALL ON {}.* TO '{user}'@'localhost'",
            ident(db)?
        ))?;
        Ok(())
    }

    pub fn drop_database(&mut self, db: &str) -> Result<(), DbError> {
        self.conn
            .query_drop(format!("DROP DATABASE IF EXISTS {}", ident(db)?))?;
        Ok(())
    }

    pub fn drop_user(&mut self, user: &str) -> Result<(), DbError> {
        ident(user)?;
        self.conn
            .query_drop(format!("DROP USER IF EXISTS '{user}'@'localhost'"))?;
        Ok(())
    }

    /// Writes `active_plugins` (serialized as WordPress does) in `db` — only ever a copy's.
    pub fn set_active_plugins(
        &mut self,
        db: &str,
        prefix: &str,
        files: &[String],
    ) -> Result<(), DbError> {
        let value = crate::wp::serial::serialize_list(files);
        self.conn.exec_drop(
            format!(
                "UPDATE {}.{} SET option_value = ? WHERE option_name = 'active_plugins'",
                ident(db)?,
                ident(&format!("{prefix}options"))?
            ),
            (value,),
        )?;
        Ok(())
    }

    /// Sets one option in `db` (a copy's `siteurl`/`home`).
    pub fn set_option(
        &mut self,
        db: &str,
        prefix: &str,
        name: &str,
        value: &str,
    ) -> Result<(), DbError> {
        self.conn.exec_drop(
            format!(
                "UPDATE {}.{} SET option_value = ? WHERE option_name = ?",
                ident(db)?,
                ident(&format!("{prefix}options"))?
            ),
            (value, name),
        )?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::host::fixture::FixtureHost;
    use crate::wp::config::DbHost;

    #[test]
    fn names_are_checked_before_sql() {
        assert_eq!(ident("wp_options").unwrap(), "`wp_options`");
        for bad in ["", "a`b", "x; DROP DATABASE y", "a b", "é"] {
            assert!(ident(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_socket_must_belong_to_root_or_mysql() {
        let host = FixtureHost::new()
            .file(
                "/etc/passwd",
                "root:x:0:0::/root:/bin/sh\nmysql:x:106:112::/nonexistent:/bin/false\n",
            )
            .socket("/run/mysqld/mysqld.sock", 106, 112, 0o777)
            .socket("/home/eve/db.sock", 1000, 1000, 0o777);
        assert_eq!(
            socket_for(&host, &DbHost::Socket(None), None).unwrap(),
            PathBuf::from("/run/mysqld/mysqld.sock")
        );
        assert!(matches!(
            socket_for(
                &host,
                &DbHost::Socket(Some("/home/eve/db.sock".into())),
                None
            ),
            Err(DbError::Untrusted(_, 1000))
        ));
        assert!(matches!(
            socket_for(&host, &DbHost::parse("db.example.com"), None),
            Err(DbError::Remote(_))
        ));
    }
}
