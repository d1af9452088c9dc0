//! Turning argv into one bash command line.

/// Joins `words` into a command line bash splits back into the same words. A single word is
/// returned unchanged: it is taken to be a command line already (`'ls | wc -l'`).
pub fn join(words: &[String]) -> String {
    match words {
        [only] => only.clone(),
        _ => words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" "),
    }
}

/// Quotes one word for bash: plain words stay as they are, others go in single quotes.
pub fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-+=%@:,./".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(ws: &[&str]) -> Vec<String> {
        ws.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn quotes_what_the_shell_would_split() {
        assert_eq!(
            join(&words(&["python3", "-c", "print(2+2)"])),
            "python3 -c 'print(2+2)'"
        );
        assert_eq!(join(&words(&["echo", "it's", ""])), r"echo 'it'\''s' ''");
        assert_eq!(join(&words(&["ls", "/tmp/a.b", "x=1"])), "ls /tmp/a.b x=1");
        assert_eq!(
            join(&words(&["echo", "$HOME", "a b"])),
            "echo '$HOME' 'a b'"
        );
    }

    #[test]
    fn one_word_is_a_command_line() {
        assert_eq!(join(&words(&["ls | wc -l"])), "ls | wc -l");
    }

    #[test]
    fn bash_splits_it_back() {
        let input = words(&["printf", "%s|", "a b", "it's", "$x", "\\n", "*", ""]);
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(join(&input))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "a b|it's|$x|\\n|*||"
        );
    }
}
