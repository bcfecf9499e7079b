//! A file a message carries ([`Attachment`]), and the name it is offered under ([`FileName`]).

use serde::{Deserialize, Serialize};

use crate::{ChatError, Id};

/// Longest file name kept, in bytes (UTF-8), as most file systems allow.
pub const MAX_FILE_NAME_BYTES: usize = 255;

/// A file uploaded to a room and attached to a message: what clients need to show it. Its bytes
/// are at `GET /api/rooms/{room}/uploads/{id}`, an image's preview at `…/{id}/preview`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub id: Id,
    pub name: FileName,
    /// In bytes.
    pub size: u64,
    /// As the server found it from the file's bytes, never as the client said.
    pub content_type: String,
    /// An image's size in pixels; present exactly when the file has a preview.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
}

impl Attachment {
    /// Whether the file has a preview (images do).
    pub fn has_preview(&self) -> bool {
        self.width.is_some()
    }
}

/// A file name as a client offered it, made safe to show and to put in a
/// `Content-Disposition` header: the last path component only, no control characters, at most
/// [`MAX_FILE_NAME_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct FileName(String);

/// A name read back (from a record, a column, a file's description) is held to the same rules
/// as one a client gave: it must be exactly what [`FileName::parse`] makes of itself.
impl TryFrom<String> for FileName {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        match FileName::parse(&raw) {
            Ok(name) if name.0 == raw => Ok(name),
            Ok(_) => Err(format!("{raw:?} is not a file name as stored")),
            Err(e) => Err(e.message),
        }
    }
}

impl FileName {
    pub fn parse(raw: &str) -> Result<Self, ChatError> {
        let last = raw.rsplit(['/', '\\']).next().unwrap_or("");
        let name: String = last
            .chars()
            .filter(|c| {
                !c.is_control() && !matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
            })
            .collect();
        let name = name.trim();
        if name.is_empty() || name == "." || name == ".." {
            return Err(ChatError::bad_request("name must be a file name"));
        }
        if name.len() > MAX_FILE_NAME_BYTES {
            return Err(ChatError::bad_request(format!(
                "name is {} bytes; the limit is {MAX_FILE_NAME_BYTES}",
                name.len()
            )));
        }
        Ok(FileName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_name_keeps_its_last_component_only() {
        assert_eq!(FileName::parse("photo.png").unwrap().as_str(), "photo.png");
        assert_eq!(
            FileName::parse("../../etc/passwd").unwrap().as_str(),
            "passwd"
        );
        assert_eq!(
            FileName::parse("C:\\Users\\a\\b.txt").unwrap().as_str(),
            "b.txt"
        );
        assert_eq!(
            FileName::parse("evil\r\nSet-Cookie: x\u{202e}gpj.exe")
                .unwrap()
                .as_str(),
            "evilSet-Cookie: xgpj.exe"
        );
        assert_eq!(
            FileName::parse("  résumé.pdf ").unwrap().as_str(),
            "résumé.pdf"
        );
    }

    #[test]
    fn a_stored_name_must_be_one_parse_keeps() {
        let read = |json: &str| serde_json::from_str::<FileName>(json);
        assert_eq!(read("\"cat.png\"").unwrap().as_str(), "cat.png");
        for bad in ["\"../x.png\"", "\"a\\u202eb\"", "\" padded \"", "\"\""] {
            assert!(read(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn empty_dot_and_long_names_are_refused() {
        for bad in ["", "   ", "dir/", "..", ".", "\u{7}"] {
            assert!(FileName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(FileName::parse(&"a".repeat(255)).is_ok());
        assert!(FileName::parse(&"a".repeat(256)).is_err());
    }
}
