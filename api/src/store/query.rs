//! One query text, bound values and row decoding for both engines.
//!
//! A query is written once with `$n` placeholders, which SQLite and PostgreSQL both read, and
//! runs on whichever engine the [`Db`] belongs to: on SQLite synchronously on the calling thread
//! through rusqlite (a statement takes microseconds, and a hand-off to a connection thread
//! cost more than the statement), on PostgreSQL through sqlx. Rows decode through
//! [`FromRecord`], written once per row type (usually by [`record!`](crate::store::record)).

use std::borrow::Cow;
use std::marker::PhantomData;

use rusqlite::types::{ToSqlOutput, ValueRef};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::{Postgres, Row as _};

use super::{Db, DbError};

/// The SQL type of a bound value (PostgreSQL needs it even for a NULL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// TEXT.
    Text,
    /// BIGINT / INTEGER.
    Int,
    /// BYTEA / BLOB.
    Blob,
    /// BOOLEAN (an INTEGER 0/1 on SQLite).
    Bool,
}

/// A value bound to a placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    /// NULL of a type.
    Null(Kind),
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// Text.
    Text(Cow<'a, str>),
    /// Bytes.
    Blob(Cow<'a, [u8]>),
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Self::Null(_) => ValueRef::Null,
            Self::Int(i) => ValueRef::Integer(*i),
            Self::Bool(b) => ValueRef::Integer(i64::from(*b)),
            Self::Text(s) => ValueRef::Text(s.as_bytes()),
            Self::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

/// What can be bound to a placeholder.
pub(crate) trait Bind<'a> {
    /// The SQL type, for a NULL of this type.
    const KIND: Kind;
    /// The bound value.
    fn value(self) -> Value<'a>;
}

macro_rules! bind_as {
    ($kind:ident, $($ty:ty => |$v:ident| $make:expr),* $(,)?) => {
        $(impl<'a> Bind<'a> for $ty {
            const KIND: Kind = Kind::$kind;
            fn value(self) -> Value<'a> {
                let $v = self;
                $make
            }
        })*
    };
}

bind_as!(Text,
    &'a str => |s| Value::Text(Cow::Borrowed(s)),
    &'a String => |s| Value::Text(Cow::Borrowed(s.as_str())),
    String => |s| Value::Text(Cow::Owned(s)),
);
bind_as!(Blob,
    &'a [u8] => |b| Value::Blob(Cow::Borrowed(b)),
    &'a Vec<u8> => |b| Value::Blob(Cow::Borrowed(b.as_slice())),
    Vec<u8> => |b| Value::Blob(Cow::Owned(b)),
);
bind_as!(Int, i64 => |i| Value::Int(i));
bind_as!(Bool, bool => |b| Value::Bool(b));

impl<'a, T: Bind<'a>> Bind<'a> for Option<T> {
    const KIND: Kind = T::KIND;
    fn value(self) -> Value<'a> {
        self.map_or(Value::Null(T::KIND), Bind::value)
    }
}

impl<'a, T> Bind<'a> for &'a Option<T>
where
    &'a T: Bind<'a>,
{
    const KIND: Kind = <&'a T as Bind<'a>>::KIND;
    fn value(self) -> Value<'a> {
        self.as_ref().map_or(Value::Null(Self::KIND), Bind::value)
    }
}

/// A column type both engines decode the same way.
pub(crate) trait Column:
    rusqlite::types::FromSql + for<'r> sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>
{
}

impl<T> Column for T where
    T: rusqlite::types::FromSql + for<'r> sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>
{
}

/// A column position or name, on either engine.
pub(crate) trait Index: rusqlite::RowIndex + sqlx::ColumnIndex<PgRow> + Copy {}

impl Index for usize {}
impl Index for &str {}

/// One result row of either engine.
pub enum Record<'a> {
    /// A SQLite row.
    Sqlite(&'a rusqlite::Row<'a>),
    /// A PostgreSQL row.
    Pg(&'a PgRow),
}

impl Record<'_> {
    /// The column `index` (a name or a position) as a `T`.
    pub(crate) fn get<T: Column>(&self, index: impl Index) -> Result<T, DbError> {
        match self {
            Self::Sqlite(row) => Ok(row.get(index)?),
            Self::Pg(row) => Ok(row.try_get(index)?),
        }
    }
}

/// A type built from one result row.
pub trait FromRecord: Sized {
    /// Decodes `record`.
    fn from_record(record: &Record<'_>) -> Result<Self, DbError>;
}

impl<A: Column, B: Column> FromRecord for (A, B) {
    fn from_record(record: &Record<'_>) -> Result<Self, DbError> {
        Ok((record.get(0)?, record.get(1)?))
    }
}

/// Defines a row struct and its [`FromRecord`]: each field reads the column of its name, or
/// the one named after `=`.
macro_rules! record {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $($(#[$field_meta:meta])* $field_vis:vis $field:ident : $ty:ty $(= $column:literal)?),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $($(#[$field_meta])* $field_vis $field: $ty,)*
        }

        impl $crate::store::FromRecord for $name {
            fn from_record(
                record: &$crate::store::Record<'_>,
            ) -> Result<Self, $crate::store::DbError> {
                Ok(Self {
                    $($field: record.get($crate::store::record!(@column $field $($column)?))?,)*
                })
            }
        }
    };
    (@column $field:ident $column:literal) => { $column };
    (@column $field:ident) => { stringify!($field) };
}
pub(crate) use record;

/// What a query's rows decode to.
pub(crate) trait Output {
    /// One decoded row.
    type Item;
    /// Decodes one row.
    fn decode(record: &Record<'_>) -> Result<Self::Item, DbError>;
}

/// Rows decode to `T` ([`query_as`]).
pub(crate) struct Rows<T>(PhantomData<fn() -> T>);

impl<T: FromRecord> Output for Rows<T> {
    type Item = T;
    fn decode(record: &Record<'_>) -> Result<T, DbError> {
        T::from_record(record)
    }
}

/// Rows decode to their first column ([`query_scalar`]).
pub(crate) struct Scalar<T>(PhantomData<fn() -> T>);

impl<T: Column> Output for Scalar<T> {
    type Item = T;
    fn decode(record: &Record<'_>) -> Result<T, DbError> {
        record.get(0)
    }
}

/// A query text built piece by piece from literal SQL and `$n` placeholders, and the values
/// they stand for (filters that are present or not; one text for both engines).
#[derive(Debug, Clone)]
pub(crate) struct Sql {
    text: String,
    args: Vec<Value<'static>>,
}

impl Sql {
    /// Starts with literal SQL.
    pub(crate) fn new(text: &'static str) -> Self {
        Self {
            text: text.to_owned(),
            args: Vec::new(),
        }
    }

    /// Appends literal SQL.
    pub(crate) fn push(&mut self, text: &'static str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder for `value`.
    pub(crate) fn bind(&mut self, value: impl Bind<'static>) -> &mut Self {
        self.args.push(value.value());
        self.text.push('$');
        self.text.push_str(&self.args.len().to_string());
        self
    }

    /// Adds a value for a placeholder the literal SQL already holds (`$1` is the first).
    pub(crate) fn arg(&mut self, value: impl Bind<'static>) -> &mut Self {
        self.args.push(value.value());
        self
    }
}

/// A query's text: a literal, or built by [`Sql`] from literals only, so bound values never
/// become SQL.
pub(crate) trait Text<'a> {
    /// The text and the values already bound to it.
    fn parts(self) -> (&'a str, Vec<Value<'a>>);
}

impl Text<'static> for &'static str {
    fn parts(self) -> (&'static str, Vec<Value<'static>>) {
        (self, Vec::new())
    }
}

impl<'a> Text<'a> for &'a Sql {
    fn parts(self) -> (&'a str, Vec<Value<'a>>) {
        (&self.text, self.args.clone())
    }
}

/// A statement with its bound values; `O` says what its rows decode to.
#[must_use = "a query does nothing until it is executed or fetched"]
pub(crate) struct Query<'a, O> {
    text: &'a str,
    args: Vec<Value<'a>>,
    out: PhantomData<O>,
}

/// A statement whose rows are not read (its count of changed rows is).
pub(crate) fn query<'a>(text: impl Text<'a>) -> Query<'a, ()> {
    let (text, args) = text.parts();
    Query {
        text,
        args,
        out: PhantomData,
    }
}

/// A statement whose rows decode to `T`.
pub(crate) fn query_as<'a, T: FromRecord>(text: impl Text<'a>) -> Query<'a, Rows<T>> {
    let (text, args) = text.parts();
    Query {
        text,
        args,
        out: PhantomData,
    }
}

/// A statement whose rows' first column is a `T`.
pub(crate) fn query_scalar<'a, T: Column>(text: impl Text<'a>) -> Query<'a, Scalar<T>> {
    let (text, args) = text.parts();
    Query {
        text,
        args,
        out: PhantomData,
    }
}

impl<'a, O> Query<'a, O> {
    /// Binds the next placeholder (`$1` first).
    pub(crate) fn bind(mut self, value: impl Bind<'a>) -> Self {
        self.args.push(value.value());
        self
    }

    /// Runs the statement; answers how many rows it changed.
    pub(crate) async fn execute(self, db: &mut Db) -> Result<u64, DbError> {
        if let Some(conn) = db.sqlite()? {
            run_sqlite(conn, self.text, &self.args, |_| Ok(()))?;
            return Ok(conn.changes());
        }
        Ok(pg_query(self.text, &self.args)
            .execute(db.pg()?)
            .await?
            .rows_affected())
    }
}

impl<O: Output> Query<'_, O> {
    /// Every row.
    pub(crate) async fn fetch_all(self, db: &mut Db) -> Result<Vec<O::Item>, DbError> {
        if let Some(conn) = db.sqlite()? {
            let mut out = Vec::new();
            run_sqlite(conn, self.text, &self.args, |row| {
                out.push(O::decode(&Record::Sqlite(row))?);
                Ok(())
            })?;
            return Ok(out);
        }
        pg_query(self.text, &self.args)
            .fetch_all(db.pg()?)
            .await?
            .iter()
            .map(|row| O::decode(&Record::Pg(row)))
            .collect()
    }

    /// The first row, if there is one (a statement that changes rows runs to its end).
    pub(crate) async fn fetch_optional(self, db: &mut Db) -> Result<Option<O::Item>, DbError> {
        if let Some(conn) = db.sqlite()? {
            let mut first = None;
            run_sqlite(conn, self.text, &self.args, |row| {
                if first.is_none() {
                    first = Some(O::decode(&Record::Sqlite(row))?);
                }
                Ok(())
            })?;
            return Ok(first);
        }
        pg_query(self.text, &self.args)
            .fetch_optional(db.pg()?)
            .await?
            .map(|row| O::decode(&Record::Pg(&row)))
            .transpose()
    }

    /// The first row; [`DbError::RowNotFound`] when there is none.
    pub(crate) async fn fetch_one(self, db: &mut Db) -> Result<O::Item, DbError> {
        self.fetch_optional(db).await?.ok_or(DbError::RowNotFound)
    }
}

/// Runs `text` on SQLite to its end, handing each row to `each`.
fn run_sqlite(
    conn: &rusqlite::Connection,
    text: &str,
    args: &[Value<'_>],
    mut each: impl FnMut(&rusqlite::Row<'_>) -> Result<(), DbError>,
) -> Result<(), DbError> {
    let mut stmt = prepare(conn, text, args)?;
    let mut rows = stmt.raw_query();
    while let Some(row) = rows.next()? {
        each(row)?;
    }
    Ok(())
}

/// The statement `text` from the connection's cache, with `args` bound by placeholder name
/// (`$3` takes the third value wherever it first appears in the text).
fn prepare<'c>(
    conn: &'c rusqlite::Connection,
    text: &str,
    args: &[Value<'_>],
) -> Result<rusqlite::CachedStatement<'c>, DbError> {
    let mut stmt = conn.prepare_cached(text)?;
    for index in 1..=stmt.parameter_count() {
        let value = stmt
            .parameter_name(index)
            .and_then(|name| name.strip_prefix('$'))
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| args.get(n.checked_sub(1)?))
            .ok_or(DbError::Placeholder {
                index,
                bound: args.len(),
            })?;
        stmt.raw_bind_parameter(index, value)?;
    }
    Ok(stmt)
}

/// `text` with `args` bound, for PostgreSQL.
fn pg_query<'q>(
    text: &'q str,
    args: &'q [Value<'_>],
) -> sqlx::query::Query<'q, Postgres, PgArguments> {
    args.iter().fold(
        sqlx::query(sqlx::AssertSqlSafe(text)),
        |q, value| match value {
            Value::Null(Kind::Text) => q.bind(None::<&str>),
            Value::Null(Kind::Int) => q.bind(None::<i64>),
            Value::Null(Kind::Blob) => q.bind(None::<&[u8]>),
            Value::Null(Kind::Bool) => q.bind(None::<bool>),
            Value::Int(i) => q.bind(*i),
            Value::Bool(b) => q.bind(*b),
            Value::Text(s) => q.bind(s.as_ref()),
            Value::Blob(b) => q.bind(b.as_ref()),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_bind_by_number_not_position() {
        let conn = rusqlite::Connection::open_in_memory().expect("memory db");
        let args = [Value::Int(1), Value::Text("two".into())];
        let mut stmt = prepare(&conn, "SELECT $2, $1, $2", &args).expect("binds");
        let row: (String, i64, String) = stmt
            .raw_query()
            .next()
            .expect("steps")
            .map(|r| {
                (
                    r.get(0).expect("0"),
                    r.get(1).expect("1"),
                    r.get(2).expect("2"),
                )
            })
            .expect("a row");
        assert_eq!(row, ("two".into(), 1, "two".into()));
    }

    #[test]
    fn a_placeholder_without_a_value_is_refused() {
        let conn = rusqlite::Connection::open_in_memory().expect("memory db");
        for text in ["SELECT $1, $2", "SELECT $0", "SELECT ?", "SELECT :name"] {
            let err = prepare(&conn, text, &[Value::Int(1)]).err();
            assert!(
                matches!(err, Some(DbError::Placeholder { .. })),
                "{text}: {err:?}"
            );
        }
    }

    #[test]
    fn nulls_keep_their_type() {
        assert_eq!(None::<i64>.value(), Value::Null(Kind::Int));
        assert_eq!((&None::<Vec<u8>>).value(), Value::Null(Kind::Blob));
        assert_eq!(Some("x").value(), Value::Text("x".into()));
    }
}
