//! Temporary: replaced by the full four-letter-word renderer.
pub const WORDS: [&str; 13] = ["ruok", "srvr", "stat", "mntr", "conf", "cons", "envi", "wchs", "wchc", "wchp", "dump", "isro", "dirs"];

pub fn is_four_letter_word(first_four_bytes: &[u8; 4]) -> Option<&'static str> {
    WORDS.iter().copied().find(|word| word.as_bytes() == first_four_bytes)
}

pub fn not_whitelisted(word: &str) -> String {
    format!("{word} is not executed because it is not in the whitelist.\n")
}
