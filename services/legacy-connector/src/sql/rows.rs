//! Rows of the operator's queries, read as legacy schemas type them (text in binary
//! collations, integer ids, integer or boolean flags) whatever the driver, and database
//! errors sorted into "cannot ask the legacy store" and "the query itself is wrong".

use crate::error::LegacyError;
use sqlx::Row;
use sqlx::mysql::MySqlRow;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;

/// Database errors are "the legacy store cannot be asked", except those that say the query
/// itself does not fit the database.
pub(super) fn classify(error: sqlx::Error) -> LegacyError {
    match error {
        sqlx::Error::ColumnNotFound(column) => {
            LegacyError::Config(format!("find_user does not return the column {column:?}"))
        }
        sqlx::Error::Database(db) if is_query_error(db.code().as_deref()) => {
            LegacyError::Config(format!("find_user failed: {}", db.message()))
        }
        other => LegacyError::Database(other),
    }
}

/// SQLSTATE classes of a query that can never succeed: syntax errors and unknown objects
/// (class 42), wrong parameter counts (07).
fn is_query_error(code: Option<&str>) -> bool {
    code.is_some_and(|c| c.starts_with("42") || c.starts_with("07"))
}

fn decode_error(column: &str, e: &sqlx::Error) -> LegacyError {
    LegacyError::Config(format!(
        "find_user column {column:?} has an unsupported type: {e}"
    ))
}

fn missing_column(column: &str) -> LegacyError {
    LegacyError::Config(format!("find_user does not return the column {column:?}"))
}

/// Reading the columns of a legacy row as legacy schemas type them, whatever the driver.
pub(super) trait LegacyRow {
    fn has_column(&self, column: &str) -> bool;
    /// A text column, accepting bytes holding UTF-8 (MySQL binary collations).
    fn text(&self, column: &str) -> Result<Option<String>, LegacyError>;
    /// The id column: text or any integer type.
    fn text_or_integer(&self, column: &str) -> Result<Option<String>, LegacyError>;
    /// A boolean column as legacy schemas store them: boolean, 0/1 integer, or text.
    fn flag(&self, column: &str) -> Result<bool, LegacyError>;

    fn optional_text(&self, column: &str) -> Result<Option<String>, LegacyError> {
        if !self.has_column(column) {
            return Ok(None);
        }
        Ok(self.text(column)?.filter(|s| !s.is_empty()))
    }

    /// An optional integer column (integer type, or text holding digits); NULL: `None`.
    fn optional_integer(&self, column: &str) -> Result<Option<i64>, LegacyError> {
        if !self.has_column(column) {
            return Ok(None);
        }
        match self.text_or_integer(column)? {
            None => Ok(None),
            Some(text) => {
                text.trim().parse().map(Some).map_err(|_| {
                    LegacyError::Config(format!("column {column:?} is not an integer"))
                })
            }
        }
    }

    /// A column as a JSON value, typed as the database types it (integers as numbers,
    /// booleans, text); NULL: `None`. A column the query does not return is a
    /// configuration error.
    fn json_value(&self, column: &str) -> Result<Option<serde_json::Value>, LegacyError>;

    fn optional_flag(&self, column: &str) -> Result<bool, LegacyError> {
        if !self.has_column(column) {
            return Ok(false);
        }
        self.flag(column)
    }
}

macro_rules! impl_legacy_row {
    ($row:ty) => {
        impl_legacy_row!($row, |_row: &$row,
                                _column: &str|
         -> Option<Option<String>> { None });
    };
    ($row:ty, $unsigned:expr) => {
        impl LegacyRow for $row {
            fn has_column(&self, column: &str) -> bool {
                self.try_column(column).is_ok()
            }

            fn text(&self, column: &str) -> Result<Option<String>, LegacyError> {
                match self.try_get::<Option<String>, _>(column) {
                    Ok(value) => Ok(value),
                    Err(sqlx::Error::ColumnNotFound(_)) => Err(missing_column(column)),
                    Err(first) => match self.try_get::<Option<Vec<u8>>, _>(column) {
                        Ok(bytes) => Ok(bytes.and_then(|b| String::from_utf8(b).ok())),
                        Err(_) => Err(decode_error(column, &first)),
                    },
                }
            }

            fn text_or_integer(&self, column: &str) -> Result<Option<String>, LegacyError> {
                if let Ok(v) = self.try_get::<Option<i64>, _>(column) {
                    return Ok(v.map(|v| v.to_string()));
                }
                if let Ok(v) = self.try_get::<Option<i32>, _>(column) {
                    return Ok(v.map(|v| v.to_string()));
                }
                if let Ok(v) = self.try_get::<Option<i16>, _>(column) {
                    return Ok(v.map(|v| v.to_string()));
                }
                if let Some(v) = ($unsigned)(self, column) {
                    return Ok(v);
                }
                self.text(column)
            }

            fn json_value(&self, column: &str) -> Result<Option<serde_json::Value>, LegacyError> {
                if !self.has_column(column) {
                    return Err(missing_column(column));
                }
                if let Ok(v) = self.try_get::<Option<i64>, _>(column) {
                    return Ok(v.map(serde_json::Value::from));
                }
                if let Ok(v) = self.try_get::<Option<i32>, _>(column) {
                    return Ok(v.map(serde_json::Value::from));
                }
                if let Ok(v) = self.try_get::<Option<bool>, _>(column) {
                    return Ok(v.map(serde_json::Value::from));
                }
                if let Ok(v) = self.try_get::<Option<f64>, _>(column) {
                    return Ok(v.map(serde_json::Value::from));
                }
                Ok(self.text(column)?.map(serde_json::Value::from))
            }

            fn flag(&self, column: &str) -> Result<bool, LegacyError> {
                if let Ok(v) = self.try_get::<Option<bool>, _>(column) {
                    return Ok(v.unwrap_or(false));
                }
                if let Ok(v) = self.try_get::<Option<i64>, _>(column) {
                    return Ok(v.is_some_and(|v| v != 0));
                }
                if let Ok(v) = self.try_get::<Option<i32>, _>(column) {
                    return Ok(v.is_some_and(|v| v != 0));
                }
                if let Ok(v) = self.try_get::<Option<i16>, _>(column) {
                    return Ok(v.is_some_and(|v| v != 0));
                }
                if let Ok(v) = self.try_get::<Option<i8>, _>(column) {
                    return Ok(v.is_some_and(|v| v != 0));
                }
                Ok(self.text(column)?.is_some_and(|s| {
                    matches!(
                        s.trim().to_ascii_lowercase().as_str(),
                        "1" | "true" | "t" | "yes" | "y"
                    )
                }))
            }
        }
    };
}

impl_legacy_row!(PgRow);
// MySQL has unsigned integers (WordPress' `ID bigint unsigned`); the others do not.
impl_legacy_row!(MySqlRow, |row: &MySqlRow,
                            column: &str|
 -> Option<Option<String>> {
    row.try_get::<Option<u64>, _>(column)
        .ok()
        .map(|v| v.map(|v| v.to_string()))
});
impl_legacy_row!(SqliteRow);
