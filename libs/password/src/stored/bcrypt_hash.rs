//! bcrypt (`$2a$`, `$2b$`, `$2y$`): well-formedness; verification is the bcrypt crate's.

pub(super) fn parse_bcrypt(stored: &str) -> Option<String> {
    // $2b$12$ + 53 characters of salt and hash.
    let bytes = stored.as_bytes();
    let well_formed = stored.len() == 60
        && ["$2a$", "$2b$", "$2y$", "$2x$"]
            .iter()
            .any(|p| stored.starts_with(p))
        && bytes[6] == b'$'
        && stored[4..6]
            .parse::<u32>()
            .is_ok_and(|cost| (4..=31).contains(&cost))
        && stored[7..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/');
    well_formed.then(|| stored.to_owned())
}
