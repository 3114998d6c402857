//! M-RoPE position ids (spec §2.6): text advances all three rows (time, height, width) together;
//! an image's tokens take their grid coordinates from the image's start. A prompt's positions end
//! below its length, and every decode step continues from `past length + delta`.

/// The three rows of a prompt's position ids, and its `rope_delta`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptPositions {
    /// `[t, h, w]` rows, each as long as the prompt.
    pub rows: [Vec<i64>; 3],
    /// `max(position) + 1 − length`: added to the past length at each decode step.
    pub delta: i64,
}

/// The LLM grid of an image: frames, and patch rows and columns after the merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenGrid {
    pub t: usize,
    pub h: usize,
    pub w: usize,
}

impl TokenGrid {
    pub fn tokens(self) -> usize {
        self.t * self.h * self.w
    }
}

/// Positions of one row without padding, as Python's `get_rope_index` computes them (for a
/// prompt without an image transformers.js 4.3.1 gets the delta wrong: spec P5; this does not).
/// `grids` are the images' token grids in prompt order; an image block is a
/// `vision_start` followed by `image_token`s.
pub fn prompt_positions(
    ids: &[i64],
    image_token: i64,
    vision_start: i64,
    grids: &[TokenGrid],
) -> Result<PromptPositions, String> {
    let mut rows: [Vec<i64>; 3] = Default::default();
    for row in &mut rows {
        row.reserve(ids.len());
    }
    let mut next = 0i64;
    let mut text_from = 0usize;
    let mut grids = grids.iter();
    let mut index = 0usize;
    while index < ids.len() {
        let opens_image = ids[index] == vision_start && ids.get(index + 1) == Some(&image_token);
        if !opens_image {
            index += 1;
            continue;
        }
        let grid = grids
            .next()
            .ok_or("more image blocks in the prompt than images")?;
        let start = index + 1;
        let end = start + grid.tokens();
        if end > ids.len() || ids[start..end].iter().any(|&id| id != image_token) {
            return Err(format!(
                "the image block at {start} is not {} image tokens",
                grid.tokens()
            ));
        }
        for (offset, _) in (text_from..start).enumerate() {
            for row in &mut rows {
                row.push(next + offset as i64);
            }
        }
        let origin = next + (start - text_from) as i64;
        let plane = grid.h * grid.w;
        for j in 0..grid.tokens() {
            rows[0].push(origin + (j / plane) as i64);
            rows[1].push(origin + ((j / grid.w) % grid.h) as i64);
            rows[2].push(origin + (j % grid.w) as i64);
        }
        next = origin + grid.t.max(grid.h).max(grid.w) as i64;
        text_from = end;
        index = end;
    }
    if grids.next().is_some() {
        return Err("fewer image blocks in the prompt than images".into());
    }
    for (offset, _) in (text_from..ids.len()).enumerate() {
        for row in &mut rows {
            row.push(next + offset as i64);
        }
    }
    let max = rows.iter().flatten().copied().max().unwrap_or(-1);
    Ok(PromptPositions {
        rows,
        delta: max + 1 - ids.len() as i64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMAGE: i64 = 9;
    const START: i64 = 8;

    /// The spec's worked example: 7 text tokens (the last a vision start), an image of grid
    /// (1, 7, 10), 23 more text tokens: positions 0..6, the image from 7, the text 17..39,
    /// delta −60.
    #[test]
    fn the_worked_example_of_the_spec() {
        let mut ids = vec![1, 2, 3, 4, 5, 6, START];
        ids.extend(std::iter::repeat_n(IMAGE, 70));
        ids.extend(std::iter::repeat_n(3, 23));
        let grid = TokenGrid { t: 1, h: 7, w: 10 };
        let p = prompt_positions(&ids, IMAGE, START, &[grid]).unwrap();
        assert_eq!(ids.len(), 100);
        assert_eq!(&p.rows[0][..7], &[0, 1, 2, 3, 4, 5, 6]);
        for j in [0usize, 9, 10, 69] {
            let at = 7 + j;
            assert_eq!(
                [p.rows[0][at], p.rows[1][at], p.rows[2][at]],
                [7, 7 + (j / 10) as i64, 7 + (j % 10) as i64],
                "image token {j}"
            );
        }
        assert_eq!(p.rows[2][77], 17);
        assert_eq!(p.rows[0][99], 39);
        assert_eq!(p.delta, -60);
    }

    #[test]
    fn text_only_prompts_count_up_with_no_delta() {
        let p = prompt_positions(&[1, 2, 3, 4, 5], IMAGE, START, &[]).unwrap();
        assert_eq!(p.rows[1], vec![0, 1, 2, 3, 4]);
        assert_eq!(p.delta, 0);
    }

    #[test]
    fn the_grid_must_match_the_pads() {
        let ids = [START, IMAGE, IMAGE, 3];
        let grid = TokenGrid { t: 1, h: 2, w: 2 };
        assert!(prompt_positions(&ids, IMAGE, START, &[grid]).is_err());
        assert!(prompt_positions(&[1, 2], IMAGE, START, &[grid]).is_err());
    }
}
