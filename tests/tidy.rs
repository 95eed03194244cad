//! Keeps the layers honest (docs/ARCHITECTURE.md §3): everything but the
//! runtime is pure, deterministic state machines, so only `src/runtime/` and
//! `src/main.rs` may touch the executor, sockets, files, threads or clocks.
//! And protocol decoding handles input straight from sockets, so `src/proto`
//! never `.unwrap()`s.
//!
//! The scan looks at code only: comments and the contents of string and char
//! literals are blanked first, so a doc comment may still say "glommio".
//! Test code is exempt: the item after a `#[cfg(test)]` line is skipped (a
//! whole `mod tests { ... }`, or a `mod tests;` whose file is then skipped too).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// What only the runtime may mention, and why each is banned elsewhere.
const RUNTIME_ONLY: &[(&str, &str)] = &[
    ("glommio", "the executor"),
    ("tokio", "an executor"),
    ("TcpStream", "sockets (std::net::TcpStream)"),
    ("TcpListener", "sockets (std::net::TcpListener)"),
    ("UdpSocket", "sockets (std::net::UdpSocket)"),
    ("std::fs", "the file system"),
    ("std::thread", "threads"),
    ("Instant::now", "the clock"),
    ("SystemTime::now", "the clock"),
];

/// Files outside the runtime allowed one banned word, inside one function.
/// `src/config.rs::load_file` reads zoo.cfg for `main` before the runtime
/// starts; everything else in config.rs parses text and stays pure (and
/// testable without files). Keep this list short and justified.
const ALLOWED: &[(&str, &str, &str)] = &[("src/config.rs", "load_file", "std::fs")];

fn is_runtime(relative: &str) -> bool {
    relative.starts_with("src/runtime/") || relative == "src/main.rs"
}

fn rust_files(directory: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(directory)
        .unwrap_or_else(|error| panic!("read {}: {error}", directory.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            out.push(path);
        }
    }
}

/// The source with comments blanked and string/char literal contents
/// replaced by spaces, line structure kept (so line numbers still match).
fn code_only(source: &str) -> Vec<String> {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut index = 0;
    let mut block_depth = 0usize;
    while index < chars.len() {
        let c = chars[index];
        let next = chars.get(index + 1).copied();
        if block_depth > 0 {
            if c == '*' && next == Some('/') {
                block_depth -= 1;
                out.push_str("  ");
                index += 2;
            } else if c == '/' && next == Some('*') {
                block_depth += 1;
                out.push_str("  ");
                index += 2;
            } else {
                out.push(if c == '\n' { '\n' } else { ' ' });
                index += 1;
            }
            continue;
        }
        match c {
            '/' if next == Some('/') => {
                while index < chars.len() && chars[index] != '\n' {
                    out.push(' ');
                    index += 1;
                }
            }
            '/' if next == Some('*') => {
                block_depth = 1;
                out.push_str("  ");
                index += 2;
            }
            // Raw strings: r"..", r#".."#, br"..".
            // (`r` starts a raw string only where no identifier is running, or after `b`.)
            'r' if (next == Some('"') || next == Some('#'))
                && (index == 0
                    || chars[index - 1] == 'b'
                    || !(chars[index - 1].is_alphanumeric() || chars[index - 1] == '_')) =>
            {
                let mut cursor = index + 1;
                let mut hashes = 0;
                while chars.get(cursor) == Some(&'#') {
                    hashes += 1;
                    cursor += 1;
                }
                if chars.get(cursor) != Some(&'"') {
                    out.push(c);
                    index += 1;
                    continue;
                }
                out.push('r');
                out.extend(std::iter::repeat_n('#', hashes));
                out.push('"');
                cursor += 1;
                loop {
                    match chars.get(cursor) {
                        None => break,
                        Some('"') if (1..=hashes).all(|offset| chars.get(cursor + offset) == Some(&'#')) => {
                            out.push('"');
                            out.extend(std::iter::repeat_n('#', hashes));
                            cursor += 1 + hashes;
                            break;
                        }
                        Some('\n') => out.push('\n'),
                        Some(_) => out.push(' '),
                    }
                    cursor += 1;
                }
                index = cursor;
            }
            '"' => {
                out.push('"');
                index += 1;
                while index < chars.len() {
                    match chars[index] {
                        '\\' => {
                            out.push_str("  ");
                            if chars.get(index + 1) == Some(&'\n') {
                                out.pop();
                                out.push('\n');
                            }
                            index += 2;
                        }
                        '"' => {
                            out.push('"');
                            index += 1;
                            break;
                        }
                        '\n' => {
                            out.push('\n');
                            index += 1;
                        }
                        _ => {
                            out.push(' ');
                            index += 1;
                        }
                    }
                }
            }
            // A char literal ('x', '\n', '\u{..}'), not a lifetime ('a).
            '\'' => {
                let literal_end = if next == Some('\\') {
                    (index + 3..chars.len().min(index + 14)).find(|&end| chars[end] == '\'')
                } else if chars.get(index + 2) == Some(&'\'') {
                    Some(index + 2)
                } else {
                    None
                };
                match literal_end {
                    Some(end) => {
                        out.push('\'');
                        out.extend(std::iter::repeat_n(' ', end - index - 1));
                        out.push('\'');
                        index = end + 1;
                    }
                    None => {
                        out.push('\'');
                        index += 1;
                    }
                }
            }
            _ => {
                out.push(c);
                index += 1;
            }
        }
    }
    out.split('\n').map(str::to_owned).collect()
}

/// Whether `word` occurs in `line` as a whole identifier path (not inside a
/// longer identifier such as `my_tokio_thing`).
fn mentions(line: &str, word: &str) -> bool {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut start = 0;
    while let Some(found) = line[start..].find(word) {
        let at = start + found;
        let before = line[..at].chars().next_back();
        let after = line[at + word.len()..].chars().next();
        if !before.is_some_and(is_ident) && !after.is_some_and(is_ident) {
            return true;
        }
        start = at + word.len();
    }
    false
}

/// The line ranges (0-based, inclusive) of items marked `#[cfg(test)]`, and
/// the module files such items pull in (`mod tests;`, `#[path = ".."]`).
struct TestSections {
    lines: Vec<(usize, usize)>,
    module_files: Vec<PathBuf>,
}

fn test_sections(file: &Path, raw: &[&str], code: &[String]) -> TestSections {
    let mut sections = TestSections { lines: Vec::new(), module_files: Vec::new() };
    let mut index = 0;
    while index < code.len() {
        if !code[index].contains("#[cfg(test)]") {
            index += 1;
            continue;
        }
        let start = index;
        let same_line = !code[start].split("#[cfg(test)]").nth(1).unwrap_or("").trim().is_empty();
        // Skip further attributes, remembering a #[path = ".."].
        let mut item = index + 1;
        let mut path_attribute = None;
        while !same_line && item < code.len() && (code[item].trim().starts_with("#[") || code[item].trim().is_empty()) {
            if let Some(rest) = raw[item].trim().strip_prefix("#[path") {
                path_attribute = rest.split('"').nth(1).map(str::to_owned);
            }
            item += 1;
        }
        // The cfg may share a line with its item: `#[cfg(test)] mod tests;`.
        let item_start = if same_line { start } else { item };
        // The item runs to its first `;` at depth 0 or its matching `}`.
        let mut depth = 0i32;
        let mut end = item_start;
        'scan: for (line_index, line) in code.iter().enumerate().skip(item_start) {
            let text = if line_index == start { line.split("#[cfg(test)]").nth(1).unwrap_or("") } else { line.as_str() };
            for c in text.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = line_index;
                            break 'scan;
                        }
                    }
                    ';' if depth == 0 => {
                        end = line_index;
                        // `mod name;`: the module's file is test code too.
                        let words: Vec<&str> = text.split_whitespace().collect();
                        if let Some(position) = words.iter().position(|word| *word == "mod") {
                            let name = words.get(position + 1).map(|word| word.trim_end_matches(';')).unwrap_or("");
                            let directory = file.parent().expect("file has a directory");
                            let stem = file.file_stem().and_then(|stem| stem.to_str()).unwrap_or("");
                            let module_directory = if stem == "mod" || stem == "lib" || stem == "main" {
                                directory.to_path_buf()
                            } else {
                                directory.join(stem)
                            };
                            match &path_attribute {
                                Some(path) => sections.module_files.push(directory.join(path)),
                                None => {
                                    sections.module_files.push(module_directory.join(format!("{name}.rs")));
                                    sections.module_files.push(module_directory.join(name).join("mod.rs"));
                                }
                            }
                        }
                        break 'scan;
                    }
                    _ => {}
                }
            }
            end = line_index;
        }
        sections.lines.push((start, end));
        index = end + 1;
    }
    sections
}

/// The line range of `fn name` in a file, for the allow-list.
fn function_lines(code: &[String], name: &str) -> Option<(usize, usize)> {
    let start = code.iter().position(|line| mentions(line, "fn") && mentions(line, name))?;
    let mut depth = 0i32;
    let mut opened = false;
    for (index, line) in code.iter().enumerate().skip(start) {
        for c in line.chars() {
            match c {
                '{' => {
                    depth += 1;
                    opened = true;
                }
                '}' => depth -= 1,
                _ => {}
            }
            if opened && depth == 0 {
                return Some((start, index));
            }
        }
    }
    None
}

#[test]
fn layers_stay_pure_and_proto_never_unwraps() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    assert!(files.len() > 10, "found only {} files under src/", files.len());

    // First pass: find test sections and the test-only module files.
    let mut sources = Vec::new();
    let mut test_only_files = BTreeSet::new();
    for file in &files {
        let source = fs::read_to_string(file).unwrap_or_else(|error| panic!("read {}: {error}", file.display()));
        let code = code_only(&source);
        let raw: Vec<&str> = source.split('\n').collect();
        let sections = test_sections(file, &raw, &code);
        test_only_files.extend(sections.module_files.iter().cloned());
        sources.push((file.clone(), code, sections.lines));
    }

    let mut offences = Vec::new();
    let mut allowances_used = BTreeSet::new();
    for (file, code, test_lines) in &sources {
        if test_only_files.contains(file) {
            continue;
        }
        let relative = file.strip_prefix(root).expect("under the crate").to_string_lossy().replace('\\', "/");
        let in_test = |line: usize| test_lines.iter().any(|&(start, end)| start <= line && line <= end);
        let allowed: Vec<(&str, (usize, usize))> = ALLOWED
            .iter()
            .filter(|(path, _, _)| *path == relative)
            .filter_map(|(_, function, word)| function_lines(code, function).map(|lines| (*word, lines)))
            .collect();
        for (index, line) in code.iter().enumerate() {
            if in_test(index) {
                continue;
            }
            if !is_runtime(&relative) {
                for (word, what) in RUNTIME_ONLY {
                    if !mentions(line, word) {
                        continue;
                    }
                    let permitted = allowed
                        .iter()
                        .any(|(allowed_word, (start, end))| allowed_word == word && *start <= index && index <= *end);
                    if permitted {
                        allowances_used.insert((relative.clone(), *word));
                        continue;
                    }
                    offences.push(format!(
                        "{relative}:{}: `{word}` ({what}) outside src/runtime/ and src/main.rs: {}",
                        index + 1,
                        line.trim()
                    ));
                }
            }
            if relative.starts_with("src/proto/") && line.contains(".unwrap()") {
                offences.push(format!(
                    "{relative}:{}: `.unwrap()` in src/proto (decode errors must be returned, never panic): {}",
                    index + 1,
                    line.trim()
                ));
            }
        }
    }
    // An allowance nobody needs any more is removed, not kept "just in case".
    for (path, function, word) in ALLOWED {
        if !allowances_used.contains(&(path.to_string(), *word)) {
            offences.push(format!("{path}: allowance for `{word}` in fn {function} is no longer used; remove it from ALLOWED"));
        }
    }
    assert!(offences.is_empty(), "{} layering violation(s):\n{}", offences.len(), offences.join("\n"));
}

#[test]
fn the_scanner_sees_code_and_skips_comments_strings_and_tests() {
    let code = code_only("let q = '\\''; let n = '\\n'; fn f<'a>(x: &'a str) { tokio }");
    assert!(mentions(&code[0], "tokio"), "char literals and lifetimes confuse the scanner: {code:?}");
    let code = code_only("let r = r#\"glommio \"quoted\"\"#; glommio");
    assert_eq!(code[0].matches("glommio").count(), 1, "{code:?}");
    let source = "use std::fs; // std::thread\n/* tokio\n glommio */ let s = \"Instant::now\";\nlet c = '{';\n#[cfg(test)]\nmod tests {\n    fn f() { std::thread::spawn(|| {}); }\n}\nfn after() { let t = Instant::now(); }\n";
    let code = code_only(source);
    assert!(mentions(&code[0], "std::fs"));
    assert!(!mentions(&code[0], "std::thread"));
    assert!(!mentions(&code[1], "tokio"));
    assert!(!mentions(&code[2], "glommio"));
    assert!(!mentions(&code[2], "Instant::now"));
    let raw: Vec<&str> = source.split('\n').collect();
    let sections = test_sections(Path::new("src/x.rs"), &raw, &code);
    assert_eq!(sections.lines, vec![(4, 7)]);
    assert!(mentions(&code[8], "Instant::now"));
    assert!(!mentions("my_tokio_thing", "tokio"));

    let source = "#[cfg(test)]\n#[path = \"prep_tests.rs\"]\nmod tests;\nfn g() {}\n";
    let code = code_only(source);
    let raw: Vec<&str> = source.split('\n').collect();
    let sections = test_sections(Path::new("src/pipeline/prep.rs"), &raw, &code);
    assert_eq!(sections.lines, vec![(0, 2)]);
    assert_eq!(sections.module_files, vec![PathBuf::from("src/pipeline/prep_tests.rs")]);
    assert_eq!(function_lines(&code_only("fn load_file() {\n std::fs::read(p);\n}\nfn other() {}\n"), "load_file"), Some((0, 2)));
}
