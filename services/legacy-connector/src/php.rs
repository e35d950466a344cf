//! The bits of PHP's `serialize` format legacy PHP apps leave in their databases: a string
//! (what Laravel's encrypter wraps) and an array of flags (WordPress' capabilities,
//! `a:1:{s:13:"administrator";b:1;}`).

/// `s:LEN:"…";` → the string; anything else is taken as it is (a value stored unserialized).
pub fn unserialize_string(text: &str) -> Result<&str, String> {
    let Some(rest) = text.strip_prefix("s:") else {
        return Ok(text);
    };
    let (string, rest) = string_body(rest).ok_or("a bad PHP-serialized string")?;
    if rest != ";" {
        return Err("a bad PHP-serialized string".to_owned());
    }
    Ok(string)
}

/// After `s:`: `LEN:"…"` → the string and what follows its closing quote. LEN counts bytes.
fn string_body(text: &str) -> Option<(&str, &str)> {
    let (len, rest) = text.split_once(":\"")?;
    let len: usize = len.parse().ok()?;
    let string = rest.get(..len)?;
    let rest = rest.get(len..)?.strip_prefix('"')?;
    Some((string, rest))
}

/// The keys of a serialized array whose values are true (`b:1`, a non-zero `i:`, or a
/// string other than "" and "0"), in order; `None` when `text` is not such an array.
pub fn true_keys_of_array(text: &str) -> Option<Vec<String>> {
    let text = text.trim();
    let (count, mut rest) = text.strip_prefix("a:")?.split_once(":{")?;
    let count: usize = count.parse().ok()?;
    let mut keys = Vec::with_capacity(count.min(100));
    for _ in 0..count {
        let (key, after_key) = match rest.strip_prefix("s:") {
            Some(body) => {
                let (key, after) = string_body(body)?;
                (key.to_owned(), after.strip_prefix(';')?)
            }
            None => {
                let (number, after) = rest.strip_prefix("i:")?.split_once(';')?;
                (number.to_owned(), after)
            }
        };
        let (truthy, after_value) = if let Some(body) = after_key.strip_prefix("s:") {
            let (value, after) = string_body(body)?;
            (!value.is_empty() && value != "0", after.strip_prefix(';')?)
        } else {
            let (value, after) = after_key.split_once(';')?;
            let truthy = match value.split_once(':')? {
                ("b", flag) => flag == "1",
                ("i", number) => number.parse::<i64>().ok()? != 0,
                ("N", _) | ("d", _) => false,
                _ => return None,
            };
            (truthy, after)
        };
        if truthy {
            keys.push(key);
        }
        rest = after_value;
    }
    (rest == "}").then_some(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_arrays_of_flags() {
        assert_eq!(unserialize_string("s:3:\"abc\";"), Ok("abc"));
        assert_eq!(unserialize_string("plain"), Ok("plain"));
        assert!(unserialize_string("s:4:\"abc\";").is_err());
        // What WordPress stores in wp_capabilities.
        assert_eq!(
            true_keys_of_array("a:1:{s:13:\"administrator\";b:1;}"),
            Some(vec!["administrator".to_owned()])
        );
        assert_eq!(
            true_keys_of_array("a:3:{s:6:\"editor\";b:1;s:6:\"author\";b:0;s:8:\"customer\";i:1;}"),
            Some(vec!["editor".to_owned(), "customer".to_owned()])
        );
        assert_eq!(true_keys_of_array("a:0:{}"), Some(vec![]));
        assert_eq!(true_keys_of_array("editor"), None);
        assert_eq!(true_keys_of_array("a:2:{s:6:\"editor\";b:1;}"), None);
        assert_eq!(true_keys_of_array("a:1:{s:99:\"x\";b:1;}"), None);
    }
}
