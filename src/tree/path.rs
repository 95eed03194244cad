//! Znode path rules, as ZooKeeper's PathUtils.validatePath states them.

/// Why a path is not a valid znode path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidPath(pub &'static str);

/// Checks a znode path: absolute, no trailing slash (except `/`), no empty,
/// `.` or `..` component, and none of the characters ZooKeeper rejects.
pub fn validate(path: &str) -> Result<(), InvalidPath> {
    if path.is_empty() {
        return Err(InvalidPath("path length must be > 0"));
    }
    if !path.starts_with('/') {
        return Err(InvalidPath("path must start with / character"));
    }
    if path.len() == 1 {
        return Ok(());
    }
    if path.ends_with('/') {
        return Err(InvalidPath("path must not end with / character"));
    }
    for component in path[1..].split('/') {
        match component {
            "" => return Err(InvalidPath("empty node name specified")),
            "." | ".." => return Err(InvalidPath("relative paths not allowed")),
            _ => {}
        }
    }
    for character in path.chars() {
        let code = character as u32;
        let invalid = code == 0
            || (0x01..=0x1f).contains(&code)
            || (0x7f..=0x9f).contains(&code)
            || (0xd800..=0xf8ff).contains(&code)
            || (0xfff0..=0xffff).contains(&code);
        if invalid {
            return Err(InvalidPath("invalid character"));
        }
    }
    Ok(())
}

/// Splits a valid non-root path into its parent and last component.
pub fn split(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(0) => ("/", &path[1..]),
        Some(index) => (&path[..index], &path[index + 1..]),
        None => ("/", path),
    }
}

pub fn join(parent: &str, child: &str) -> String {
    if parent == "/" {
        format!("/{child}")
    } else {
        format!("{parent}/{child}")
    }
}

/// `path` and each of its ancestors, nearest first, ending at `/`.
pub fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    let mut next = Some(path);
    std::iter::from_fn(move || {
        let current = next?;
        next = if current == "/" { None } else { Some(split(current).0) };
        Some(current)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_like_path_utils() {
        for good in ["/", "/a", "/a/b", "/a-b_c.d", "/zookeeper/quota", "/a/.b", "/é"] {
            assert_eq!(validate(good), Ok(()), "{good}");
        }
        for bad in ["", "a", "/a/", "//", "/a//b", "/a/.", "/a/..", "/./a", "/a\0b", "/a\u{1}", "/\u{7f}", "/\u{fff5}"] {
            assert!(validate(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn split_join_and_ancestors() {
        assert_eq!(split("/a"), ("/", "a"));
        assert_eq!(split("/a/b/c"), ("/a/b", "c"));
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
        assert_eq!(ancestors("/a/b").collect::<Vec<_>>(), vec!["/a/b", "/a", "/"]);
        assert_eq!(ancestors("/").collect::<Vec<_>>(), vec!["/"]);
    }
}
