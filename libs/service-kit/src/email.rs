//! Emails compare case-insensitively and are stored normalized (invariant 7, docs/ARCHITECTURE.md); the
//! spelling the user or the legacy store used is kept separately for display.

use std::fmt;

/// RFC 5321 limits a forward path to 256 octets including the angle brackets.
const MAX_EMAIL_LEN: usize = 254;

/// A syntactically plausible email, normalized: trimmed and lower-cased.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Email {
    normalized: String,
    display: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("email is required")]
    Empty,
    #[error("email is longer than {MAX_EMAIL_LEN} bytes")]
    TooLong,
    #[error("email must look like name@domain, without spaces or control characters")]
    Malformed,
}

impl Email {
    pub fn parse(input: &str) -> Result<Self, EmailError> {
        let display = input.trim();
        if display.is_empty() {
            return Err(EmailError::Empty);
        }
        if display.len() > MAX_EMAIL_LEN {
            return Err(EmailError::TooLong);
        }
        let Some((local, domain)) = display.rsplit_once('@') else {
            return Err(EmailError::Malformed);
        };
        let bad_char = |c: char| c.is_whitespace() || c.is_control();
        if local.is_empty()
            || domain.is_empty()
            || domain.contains('@')
            || domain.starts_with('.')
            || domain.ends_with('.')
            || display.chars().any(bad_char)
        {
            return Err(EmailError::Malformed);
        }
        Ok(Self {
            normalized: display.to_lowercase(),
            display: display.to_owned(),
        })
    }

    /// The form stored and compared: lower-case.
    pub fn normalized(&self) -> &str {
        &self.normalized
    }

    /// The spelling as given.
    pub fn display(&self) -> &str {
        &self.display
    }
}

impl fmt::Debug for Email {
    // Emails are personal data: keep them out of accidental debug output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Email(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_case_and_keeps_display() {
        let email = Email::parse("  Alice@Example.COM ").expect("valid");
        assert_eq!(email.normalized(), "alice@example.com");
        assert_eq!(email.display(), "Alice@Example.COM");
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(Email::parse(""), Err(EmailError::Empty));
        assert_eq!(Email::parse("   "), Err(EmailError::Empty));
        for bad in [
            "alice",
            "@example.com",
            "alice@",
            "al ice@example.com",
            "a@b@",
            "a@.com",
            "a\u{0}@x.io",
        ] {
            assert_eq!(Email::parse(bad), Err(EmailError::Malformed), "{bad:?}");
        }
        assert_eq!(
            Email::parse(&format!("{}@example.com", "a".repeat(300))),
            Err(EmailError::TooLong)
        );
    }
}
