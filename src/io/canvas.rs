//! A small RGB canvas for the engine's pictures (report.png, progress.png): pixels, boxes,
//! lines, blits and text in a built-in 5x7 bitmap font, so a PNG reads without anything else.

use std::path::Path;

use crate::Result;

/// An RGB canvas.
pub struct Canvas {
    pub w: usize,
    pub h: usize,
    pub rgb: Vec<u8>,
}

impl Canvas {
    pub fn new(w: usize, h: usize, bg: [u8; 3]) -> Self {
        Canvas { w, h, rgb: bg.repeat(w * h) }
    }

    pub fn set(&mut self, x: usize, y: usize, c: [u8; 3]) {
        if x < self.w && y < self.h {
            let o = (y * self.w + x) * 3;
            self.rgb[o..o + 3].copy_from_slice(&c);
        }
    }

    pub fn fill(&mut self, x0: usize, y0: usize, w: usize, h: usize, c: [u8; 3]) {
        for y in y0..y0 + h {
            for x in x0..x0 + w {
                self.set(x, y, c);
            }
        }
    }

    pub fn blit(&mut self, src: &Canvas, x0: usize, y0: usize) {
        for y in 0..src.h {
            for x in 0..src.w {
                let o = (y * src.w + x) * 3;
                self.set(x0 + x, y0 + y, [src.rgb[o], src.rgb[o + 1], src.rgb[o + 2]]);
            }
        }
    }

    /// Text in the 5x7 font at `scale` (upper case; unknown characters draw as blanks).
    pub fn text(&mut self, x0: usize, y0: usize, s: &str, scale: usize, c: [u8; 3]) {
        for (n, ch) in s.chars().enumerate() {
            let g = glyph(ch.to_ascii_uppercase());
            for (row, bits) in g.iter().enumerate() {
                for col in 0..5 {
                    if bits >> (4 - col) & 1 == 1 {
                        let x = x0 + n * 6 * scale + col * scale;
                        self.fill(x, y0 + row * scale, scale, scale, c);
                    }
                }
            }
        }
    }

    /// A two-pixel-thick line from `a` to `b` (Bresenham), clipped to the canvas.
    pub fn line(&mut self, a: (i64, i64), b: (i64, i64), c: [u8; 3]) {
        let ((x0, y0), (x1, y1)) = (a, b);
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.set_signed(x, y, c);
            self.set_signed(x, y + 1, c);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    fn set_signed(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 {
            self.set(x as usize, y as usize, c);
        }
    }

    /// Width in pixels of `s` in the font at `scale`.
    pub fn text_width(s: &str, scale: usize) -> usize {
        s.chars().count() * 6 * scale
    }

    /// Writes the canvas as an 8-bit RGB PNG, atomically.
    ///
    /// # Errors
    /// [`Error::Io`] / [`Error::Format`] naming the file.
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::io::png::write_rgb(path, self.w, self.h, &self.rgb)
    }
}

/// Rows of the 5x7 glyph of `c`, five bits each (most significant = left).
fn glyph(c: char) -> [u8; 7] {
    match c {
        '0' => [14, 17, 19, 21, 25, 17, 14],
        '1' => [4, 12, 4, 4, 4, 4, 14],
        '2' => [14, 17, 1, 2, 4, 8, 31],
        '3' => [31, 2, 4, 2, 1, 17, 14],
        '4' => [2, 6, 10, 18, 31, 2, 2],
        '5' => [31, 16, 30, 1, 1, 17, 14],
        '6' => [6, 8, 16, 30, 17, 17, 14],
        '7' => [31, 1, 2, 4, 8, 8, 8],
        '8' => [14, 17, 17, 14, 17, 17, 14],
        '9' => [14, 17, 17, 15, 1, 2, 12],
        'A' => [14, 17, 17, 31, 17, 17, 17],
        'B' => [30, 17, 17, 30, 17, 17, 30],
        'C' => [14, 17, 16, 16, 16, 17, 14],
        'D' => [28, 18, 17, 17, 17, 18, 28],
        'E' => [31, 16, 16, 30, 16, 16, 31],
        'F' => [31, 16, 16, 30, 16, 16, 16],
        'G' => [14, 17, 16, 23, 17, 17, 15],
        'H' => [17, 17, 17, 31, 17, 17, 17],
        'I' => [14, 4, 4, 4, 4, 4, 14],
        'J' => [7, 2, 2, 2, 2, 18, 12],
        'K' => [17, 18, 20, 24, 20, 18, 17],
        'L' => [16, 16, 16, 16, 16, 16, 31],
        'M' => [17, 27, 21, 21, 17, 17, 17],
        'N' => [17, 17, 25, 21, 19, 17, 17],
        'O' => [14, 17, 17, 17, 17, 17, 14],
        'P' => [30, 17, 17, 30, 16, 16, 16],
        'Q' => [14, 17, 17, 17, 21, 18, 13],
        'R' => [30, 17, 17, 30, 20, 18, 17],
        'S' => [15, 16, 16, 14, 1, 1, 30],
        'T' => [31, 4, 4, 4, 4, 4, 4],
        'U' => [17, 17, 17, 17, 17, 17, 14],
        'V' => [17, 17, 17, 17, 17, 10, 4],
        'W' => [17, 17, 17, 21, 21, 21, 10],
        'X' => [17, 17, 10, 4, 10, 17, 17],
        'Y' => [17, 17, 17, 10, 4, 4, 4],
        'Z' => [31, 1, 2, 4, 8, 16, 31],
        '.' => [0, 0, 0, 0, 0, 12, 12],
        ',' => [0, 0, 0, 0, 12, 4, 8],
        ':' => [0, 12, 12, 0, 12, 12, 0],
        '-' => [0, 0, 0, 31, 0, 0, 0],
        '+' => [0, 4, 4, 31, 4, 4, 0],
        '=' => [0, 0, 31, 0, 31, 0, 0],
        '/' => [0, 1, 2, 4, 8, 16, 0],
        '%' => [24, 25, 2, 4, 8, 19, 3],
        '(' => [2, 4, 8, 8, 8, 4, 2],
        ')' => [8, 4, 2, 2, 2, 4, 8],
        '^' => [4, 10, 17, 0, 0, 0, 0],
        '_' => [0, 0, 0, 0, 0, 0, 31],
        '|' => [4, 4, 4, 4, 4, 4, 4],
        '<' => [2, 4, 8, 16, 8, 4, 2],
        '>' => [8, 4, 2, 1, 2, 4, 8],
        _ => [0; 7],
    }
}
