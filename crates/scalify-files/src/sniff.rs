//! Content types from a file's first bytes.
//!
//! A client's `Content-Type` and file name say nothing trustworthy, and a browser that is told
//! a file is `text/html` runs it. So the type a file is served with comes from its bytes, from
//! a short list of formats that no browser executes; everything else is
//! `application/octet-stream`.

/// Bytes [`sniff`] looks at.
pub const SNIFF_BYTES: usize = 512;

/// What a file's first bytes say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sniffed {
    pub content_type: &'static str,
    /// An image the server makes a preview of (and browsers may show inline).
    pub image: bool,
}

impl Sniffed {
    const fn of(content_type: &'static str) -> Self {
        Sniffed {
            content_type,
            image: false,
        }
    }
    const fn image(content_type: &'static str) -> Self {
        Sniffed {
            content_type,
            image: true,
        }
    }
}

/// The type of a file that starts with `head` (its first [`SNIFF_BYTES`] bytes, or all of it
/// if shorter).
pub fn sniff(head: &[u8]) -> Sniffed {
    let starts = |magic: &[u8]| head.starts_with(magic);
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    if starts(b"\x89PNG\r\n\x1a\n") {
        Sniffed::image("image/png")
    } else if starts(b"\xff\xd8\xff") {
        Sniffed::image("image/jpeg")
    } else if starts(b"GIF87a") || starts(b"GIF89a") {
        Sniffed::image("image/gif")
    } else if starts(b"RIFF") && at(8, b"WEBP") {
        Sniffed::image("image/webp")
    } else if starts(b"%PDF-") {
        Sniffed::of("application/pdf")
    } else if starts(b"PK\x03\x04") || starts(b"PK\x05\x06") {
        Sniffed::of("application/zip")
    } else if starts(b"\x1f\x8b") {
        Sniffed::of("application/gzip")
    } else if starts(b"OggS") {
        Sniffed::of("audio/ogg")
    } else if starts(b"RIFF") && at(8, b"WAVE") {
        Sniffed::of("audio/wav")
    } else if starts(b"ID3") || starts(b"\xff\xfb") || starts(b"\xff\xf3") {
        Sniffed::of("audio/mpeg")
    } else if at(4, b"ftyp") {
        Sniffed::of("video/mp4")
    } else if starts(b"\x1a\x45\xdf\xa3") {
        Sniffed::of("video/webm")
    } else if is_text(head) {
        Sniffed::of("text/plain; charset=utf-8")
    } else {
        Sniffed::of("application/octet-stream")
    }
}

/// UTF-8 without NUL or other control characters than whitespace (a character cut at the end
/// of `head` is allowed).
fn is_text(head: &[u8]) -> bool {
    let valid = match std::str::from_utf8(head) {
        Ok(s) => s,
        Err(e) if e.error_len().is_none() => match std::str::from_utf8(&head[..e.valid_up_to()]) {
            Ok(s) => s,
            Err(_) => return false,
        },
        Err(_) => return false,
    };
    !valid.is_empty()
        && valid
            .chars()
            .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t' | '\x0c'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_come_from_the_bytes() {
        assert_eq!(
            sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"),
            Sniffed::image("image/png")
        );
        assert_eq!(
            sniff(b"\xff\xd8\xff\xe0\0\x10JFIF"),
            Sniffed::image("image/jpeg")
        );
        assert_eq!(sniff(b"GIF89a\x01\0"), Sniffed::image("image/gif"));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Sniffed::image("image/webp"));
        assert_eq!(sniff(b"%PDF-1.7\n").content_type, "application/pdf");
        assert_eq!(sniff(b"\0\0\0\x18ftypmp42").content_type, "video/mp4");
        assert_eq!(
            sniff("héllo\n".as_bytes()).content_type,
            "text/plain; charset=utf-8"
        );
    }

    #[test]
    fn markup_and_unknown_bytes_are_never_served_as_what_they_claim() {
        // HTML and SVG are text: served as text/plain, which no browser runs.
        assert_eq!(
            sniff(b"<html><script>alert(1)</script>").content_type,
            "text/plain; charset=utf-8"
        );
        assert!(!sniff(b"<svg onload=alert(1)>").image);
        assert_eq!(
            sniff(b"\0\x01\x02binary").content_type,
            "application/octet-stream"
        );
        assert_eq!(sniff(b"").content_type, "application/octet-stream");
        // A multi-byte character cut by the sniff window is still text.
        assert_eq!(
            sniff("ab\u{e9}".as_bytes().split_at(3).0).content_type,
            "text/plain; charset=utf-8"
        );
    }
}
