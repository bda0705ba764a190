//! The one mapping from a PostgreSQL constraint violation to a domain error.
//!
//! Every table's `CHECK`s mirror a Rust parser, so a violation normally means
//! another client (or a bug) sent what the types refuse. Each crate lists its
//! constraint names with the field they guard; [`constraint_violation`] turns
//! a matching database error into the [`Validation`] the crate returns.

use crate::Validation;

/// If `error` is a constraint violation whose constraint is named in
/// `fields` (`(constraint name, field)`), the refusal of that field.
/// Anything else (connection loss, an unlisted constraint) gives `None`, and
/// the caller reports it as a database error.
pub fn constraint_violation(
    error: &sqlx::Error,
    fields: &[(&str, &'static str)],
) -> Option<Validation> {
    let db = error.as_database_error()?;
    let constraint = db.constraint()?;
    let field = fields
        .iter()
        .find(|(name, _)| *name == constraint)
        .map(|(_, field)| *field)?;
    Some(Validation::new(
        field,
        format!("refused by the database constraint {constraint}"),
    ))
}
