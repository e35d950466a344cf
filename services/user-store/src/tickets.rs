//! Single-use tickets (password reset, email verification): 256 random bits handed to the
//! caller once, stored only as their SHA-256, so a read of the database yields no usable
//! ticket.

use base64::Engine as _;
use sha2::Digest as _;

/// A ticket as handed to the caller. Its `Debug` prints nothing.
pub struct Ticket(String);

impl Ticket {
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(Self(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
        ))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ticket(<redacted>)")
    }
}

/// The stored form of a ticket.
pub fn ticket_hash(ticket: &str) -> String {
    let digest = sha2::Sha256::digest(ticket.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a string can be a ticket at all (43 base64url characters); anything else is
/// refused before touching the database.
pub fn is_well_formed(ticket: &str) -> bool {
    ticket.len() == 43
        && ticket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub const KIND_PASSWORD_RESET: &str = "password_reset";
pub const KIND_EMAIL_VERIFICATION: &str = "email_verification";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_are_random_well_formed_and_hashed() {
        let a = Ticket::generate().expect("rng");
        let b = Ticket::generate().expect("rng");
        assert_ne!(a.expose(), b.expose());
        assert!(is_well_formed(a.expose()));
        assert!(!is_well_formed("short"));
        assert_eq!(ticket_hash(a.expose()).len(), 64);
        assert!(!format!("{a:?}").contains(a.expose()));
    }
}
