//! Small PNG previews of images, decoded under a pixel budget.
//!
//! A few kilobytes of PNG or GIF can declare a 100,000 × 100,000 image: decoding it would
//! take 40 GB. The header's dimensions are read first and an image over the budget is refused
//! before any pixel is decoded; the decoder also runs with an allocation limit, so a file whose
//! header lies cannot get past it either.

use std::io::Cursor;

use image::{ImageFormat, ImageReader, Limits};

/// The longest side of a preview, in pixels.
pub const PREVIEW_EDGE: u32 = 320;

/// A preview and the image's own size.
#[derive(Debug, Clone)]
pub struct Preview {
    pub png: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreviewError {
    #[error("the image is {width}×{height} pixels; the limit is {limit} pixels")]
    TooManyPixels { width: u32, height: u32, limit: u64 },
    #[error("the image cannot be decoded")]
    Undecodable,
}

/// A preview of the image in `bytes`, if it has at most `max_pixels` pixels. CPU-bound: run it
/// off the async runtime.
pub fn preview(bytes: &[u8], max_pixels: u64) -> Result<Preview, PreviewError> {
    let reader = || {
        ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|_| PreviewError::Undecodable)
    };
    let (width, height) = reader()?
        .into_dimensions()
        .map_err(|_| PreviewError::Undecodable)?;
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(PreviewError::TooManyPixels {
            width,
            height,
            limit: max_pixels,
        });
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    // RGBA at 16 bits per channel, plus the decoder's own buffers.
    limits.max_alloc = Some(max_pixels.saturating_mul(8).saturating_add(64 << 20));
    let mut reader = reader()?;
    reader.limits(limits);
    let image = reader.decode().map_err(|_| PreviewError::Undecodable)?;
    let small = if width > PREVIEW_EDGE || height > PREVIEW_EDGE {
        image.thumbnail(PREVIEW_EDGE, PREVIEW_EDGE)
    } else {
        image
    };
    let mut png = Vec::new();
    small
        .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
        .map_err(|_| PreviewError::Undecodable)?;
    Ok(Preview { png, width, height })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let image = image::RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
        });
        let mut out = Vec::new();
        image
            .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn a_preview_fits_the_edge_and_keeps_the_aspect_ratio() {
        let p = preview(&png(1000, 500), 1_000_000).unwrap();
        assert_eq!((p.width, p.height), (1000, 500));
        let small = image::load_from_memory(&p.png).unwrap();
        assert_eq!((small.width(), small.height()), (320, 160));
        // Small images are kept as they are.
        let p = preview(&png(40, 30), 1_000_000).unwrap();
        let small = image::load_from_memory(&p.png).unwrap();
        assert_eq!((small.width(), small.height()), (40, 30));
    }

    #[test]
    fn an_image_over_the_budget_is_refused_before_decoding() {
        assert_eq!(
            preview(&png(200, 100), 19_999).unwrap_err(),
            PreviewError::TooManyPixels {
                width: 200,
                height: 100,
                limit: 19_999
            }
        );
    }

    #[test]
    fn bytes_that_are_no_image_are_undecodable() {
        assert_eq!(
            preview(b"\x89PNG\r\n\x1a\nnot really", 1_000_000).unwrap_err(),
            PreviewError::Undecodable
        );
    }
}
