//! The impls every opsdeck id repeats, written once.
//!
//! Two shapes of id exist: text ids (`struct T(Box<str>)` with
//! `fn parse(&str) -> Result<T, E>`, e.g. [`crate::OperationId`]) and UUID
//! ids (`struct T(Uuid)`, e.g. [`crate::UserId`]). The macros below give
//! both shapes their conversions, formatting and — with the `postgres`
//! feature — `sqlx::Type`/`Encode`/`Decode`, so ids bind directly and a
//! stored value that breaks the rule decodes to an error, never a panic.

/// Implements `FromStr`, `TryFrom<String>`, `TryFrom<&str>`, `From<T> for
/// String`, `AsRef<str>`, `Display`, `Debug` and (with core's `postgres`
/// feature) the sqlx traits for a text id (e.g. `struct T(Box<str>)`) that has
/// `fn parse(&str) -> Result<T, E>` and `fn as_str(&self) -> &str`.
///
/// ```
/// #[derive(Clone, PartialEq, Eq, Hash)]
/// pub struct Color(Box<str>);
/// impl Color {
///     pub fn parse(s: &str) -> Result<Self, opsdeck_core::ParseError> {
///         match s {
///             "red" | "blue" => Ok(Color(s.into())),
///             _ => Err(opsdeck_core::ParseError::Empty { kind: "color" }),
///         }
///     }
///     pub fn as_str(&self) -> &str { &self.0 }
/// }
/// opsdeck_core::text_id!(Color, opsdeck_core::ParseError);
///
/// let c: Color = "red".parse().unwrap();
/// assert_eq!(format!("{c} {c:?}"), r#"red Color("red")"#);
/// assert!(Color::try_from("green").is_err());
/// ```
#[macro_export]
macro_rules! text_id {
    ($ty:ident, $err:ty) => {
        impl ::std::str::FromStr for $ty {
            type Err = $err;
            fn from_str(s: &str) -> ::std::result::Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl ::std::convert::TryFrom<::std::string::String> for $ty {
            type Error = $err;
            fn try_from(s: ::std::string::String) -> ::std::result::Result<Self, Self::Error> {
                Self::parse(&s)
            }
        }

        impl ::std::convert::TryFrom<&str> for $ty {
            type Error = $err;
            fn try_from(s: &str) -> ::std::result::Result<Self, Self::Error> {
                Self::parse(s)
            }
        }

        impl ::std::convert::From<$ty> for ::std::string::String {
            fn from(id: $ty) -> Self {
                id.as_str().into()
            }
        }

        impl ::std::convert::AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }

        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, "{}({:?})", stringify!($ty), self.as_str())
            }
        }

        $crate::__text_id_sqlx!($ty);
    };
}

/// Implements `random`, `as_uuid`, `From<Uuid>`, `FromStr`, `Display`,
/// `Debug` and (with core's `postgres` feature) the sqlx traits for a UUID
/// id `struct T(Uuid)`; `$kind` names it in parse errors.
///
/// ```
/// #[derive(Clone, Copy, PartialEq, Eq, Hash)]
/// pub struct TicketId(uuid::Uuid);
/// opsdeck_core::uuid_id!(TicketId, "ticket id");
///
/// let id = TicketId::random();
/// assert_eq!(id.to_string().parse::<TicketId>().unwrap(), id);
/// assert!("nope".parse::<TicketId>().is_err());
/// ```
#[macro_export]
macro_rules! uuid_id {
    ($ty:ident, $kind:literal) => {
        impl $ty {
            /// A new random (v4) id.
            pub fn random() -> Self {
                $ty($crate::__private::Uuid::new_v4())
            }

            /// The underlying UUID.
            pub fn as_uuid(&self) -> $crate::__private::Uuid {
                self.0
            }
        }

        impl ::std::convert::From<$crate::__private::Uuid> for $ty {
            fn from(id: $crate::__private::Uuid) -> Self {
                $ty(id)
            }
        }

        impl ::std::str::FromStr for $ty {
            type Err = $crate::ParseError;
            fn from_str(s: &str) -> ::std::result::Result<Self, Self::Err> {
                $crate::__private::Uuid::parse_str(s).map($ty).map_err(|_| {
                    $crate::ParseError::Malformed {
                        kind: $kind,
                        input: $crate::Snippet::new(s),
                        reason: "expected a UUID",
                    }
                })
            }
        }

        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::Display::fmt(&self.0, f)
            }
        }

        impl ::std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, "{}({})", stringify!($ty), self.0)
            }
        }

        $crate::__uuid_id_sqlx!($ty);
    };
}

#[cfg(feature = "postgres")]
#[doc(hidden)]
#[macro_export]
macro_rules! __text_id_sqlx {
    ($ty:ident) => {
        impl $crate::__private::sqlx::Type<$crate::__private::sqlx::Postgres> for $ty {
            fn type_info() -> $crate::__private::sqlx::postgres::PgTypeInfo {
                <&str as $crate::__private::sqlx::Type<$crate::__private::sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &$crate::__private::sqlx::postgres::PgTypeInfo) -> bool {
                <&str as $crate::__private::sqlx::Type<$crate::__private::sqlx::Postgres>>::compatible(ty)
            }
        }

        impl $crate::__private::sqlx::Encode<'_, $crate::__private::sqlx::Postgres> for $ty {
            fn encode_by_ref(
                &self,
                buf: &mut $crate::__private::sqlx::postgres::PgArgumentBuffer,
            ) -> ::std::result::Result<
                $crate::__private::sqlx::encode::IsNull,
                $crate::__private::sqlx::error::BoxDynError,
            > {
                <&str as $crate::__private::sqlx::Encode<'_, $crate::__private::sqlx::Postgres>>::encode_by_ref(
                    &self.as_str(),
                    buf,
                )
            }
        }

        impl<'r> $crate::__private::sqlx::Decode<'r, $crate::__private::sqlx::Postgres> for $ty {
            fn decode(
                value: $crate::__private::sqlx::postgres::PgValueRef<'r>,
            ) -> ::std::result::Result<Self, $crate::__private::sqlx::error::BoxDynError> {
                let text = <&str as $crate::__private::sqlx::Decode<'r, $crate::__private::sqlx::Postgres>>::decode(value)?;
                // A row another client wrote may break the rule: an error, not a panic.
                Ok(Self::parse(text)?)
            }
        }

        impl $crate::__private::sqlx::postgres::PgHasArrayType for $ty {
            fn array_type_info() -> $crate::__private::sqlx::postgres::PgTypeInfo {
                <&str as $crate::__private::sqlx::postgres::PgHasArrayType>::array_type_info()
            }
        }
    };
}

#[cfg(not(feature = "postgres"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __text_id_sqlx {
    ($ty:ident) => {};
}

#[cfg(feature = "postgres")]
#[doc(hidden)]
#[macro_export]
macro_rules! __uuid_id_sqlx {
    ($ty:ident) => {
        impl $crate::__private::sqlx::Type<$crate::__private::sqlx::Postgres> for $ty {
            fn type_info() -> $crate::__private::sqlx::postgres::PgTypeInfo {
                <$crate::__private::Uuid as $crate::__private::sqlx::Type<$crate::__private::sqlx::Postgres>>::type_info()
            }
        }

        impl $crate::__private::sqlx::Encode<'_, $crate::__private::sqlx::Postgres> for $ty {
            fn encode_by_ref(
                &self,
                buf: &mut $crate::__private::sqlx::postgres::PgArgumentBuffer,
            ) -> ::std::result::Result<
                $crate::__private::sqlx::encode::IsNull,
                $crate::__private::sqlx::error::BoxDynError,
            > {
                <$crate::__private::Uuid as $crate::__private::sqlx::Encode<'_, $crate::__private::sqlx::Postgres>>::encode_by_ref(&self.0, buf)
            }
        }

        impl<'r> $crate::__private::sqlx::Decode<'r, $crate::__private::sqlx::Postgres> for $ty {
            fn decode(
                value: $crate::__private::sqlx::postgres::PgValueRef<'r>,
            ) -> ::std::result::Result<Self, $crate::__private::sqlx::error::BoxDynError> {
                <$crate::__private::Uuid as $crate::__private::sqlx::Decode<'r, $crate::__private::sqlx::Postgres>>::decode(value).map($ty)
            }
        }

        impl $crate::__private::sqlx::postgres::PgHasArrayType for $ty {
            fn array_type_info() -> $crate::__private::sqlx::postgres::PgTypeInfo {
                <$crate::__private::Uuid as $crate::__private::sqlx::postgres::PgHasArrayType>::array_type_info()
            }
        }
    };
}

#[cfg(not(feature = "postgres"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __uuid_id_sqlx {
    ($ty:ident) => {};
}
