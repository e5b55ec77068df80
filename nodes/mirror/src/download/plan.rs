//! The plan of a ranged fill: which pieces of a blob are in the spool, which are being
//! fetched, which wait, and which offsets readers wait for. Small whatever the blob's size:
//! finished neighbours merge, so it holds about one entry per piece in flight or waiting.

use std::collections::VecDeque;

/// Offsets readers wait for, at most this many at once (more wait for the fill).
const MAX_WANTED: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Fetching,
    Done,
}

/// `[start, end)` of the blob; `filled` bytes from `start` on are in the spool.
#[derive(Debug, Clone, Copy)]
struct Piece {
    start: u64,
    end: u64,
    filled: u64,
    state: State,
}

impl Piece {
    fn frontier(&self) -> u64 {
        self.start.saturating_add(self.filled)
    }
}

/// A ranged fill's pieces, for the leader (what to fetch next) and readers (what is there).
#[derive(Debug)]
pub(super) struct FillPlan {
    chunk: u64,
    /// Sorted, without gaps, covering `[0, size)`.
    pieces: Vec<Piece>,
    wanted: VecDeque<u64>,
}

/// How far a fill has come, for the status page.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ChunkProgress {
    /// Pieces the blob is fetched in so far (finished neighbours counted as one).
    pub fetching: usize,
    pub waiting: usize,
    /// Bytes in the spool, in any order.
    pub received: u64,
}

impl FillPlan {
    /// A blob of `size` bytes fetched in pieces of `chunk`; `[0, first_end)` is already asked.
    pub(super) fn new(size: u64, chunk: u64, first_end: u64) -> FillPlan {
        let first_end = first_end.min(size);
        let mut pieces = vec![Piece {
            start: 0,
            end: first_end,
            filled: 0,
            state: State::Fetching,
        }];
        if first_end < size {
            pieces.push(Piece {
                start: first_end,
                end: size,
                filled: 0,
                state: State::Pending,
            });
        }
        FillPlan {
            chunk: chunk.max(1),
            pieces,
            wanted: VecDeque::new(),
        }
    }

    /// The next piece to fetch, `[start, end)`: the first one nobody fetches yet.
    pub(super) fn claim_next(&mut self) -> Option<(u64, u64)> {
        let i = self.pieces.iter().position(|p| p.state == State::Pending)?;
        let start = self.pieces[i].start;
        Some(self.claim(i, start))
    }

    /// A piece starting at `offset` that a reader waits for, unless one in flight or in the
    /// spool already holds it.
    pub(super) fn claim_at(&mut self, offset: u64) -> Option<(u64, u64)> {
        let i = self.index_of(offset)?;
        (self.pieces[i].state == State::Pending).then(|| self.claim(i, offset))
    }

    /// Mark `[offset, offset + chunk)` of pending piece `i` (clipped to it) as fetched now.
    fn claim(&mut self, i: usize, offset: u64) -> (u64, u64) {
        let piece = self.pieces[i];
        let end = offset.saturating_add(self.chunk).min(piece.end);
        let mut parts = Vec::with_capacity(3);
        if piece.start < offset {
            parts.push(Piece {
                end: offset,
                ..piece
            });
        }
        parts.push(Piece {
            start: offset,
            end,
            filled: 0,
            state: State::Fetching,
        });
        if end < piece.end {
            parts.push(Piece {
                start: end,
                ..piece
            });
        }
        self.pieces.splice(i..=i, parts);
        (offset, end)
    }

    /// The piece starting at `start` has `filled` bytes in the spool.
    pub(super) fn filled(&mut self, start: u64, filled: u64) {
        let Some(i) = self.pieces.iter().position(|p| p.start == start) else {
            return;
        };
        let piece = &mut self.pieces[i];
        piece.filled = filled.min(piece.end - piece.start);
        if piece.frontier() == piece.end {
            piece.state = State::Done;
            self.merge_done(i);
        }
    }

    fn merge_done(&mut self, i: usize) {
        let mut i = i;
        if i > 0 && self.pieces[i - 1].state == State::Done {
            self.pieces[i - 1].end = self.pieces[i].end;
            self.pieces[i - 1].filled = self.pieces[i - 1].end - self.pieces[i - 1].start;
            self.pieces.remove(i);
            i -= 1;
        }
        if i + 1 < self.pieces.len() && self.pieces[i + 1].state == State::Done {
            self.pieces[i].end = self.pieces[i + 1].end;
            self.pieces[i].filled = self.pieces[i].end - self.pieces[i].start;
            self.pieces.remove(i + 1);
        }
    }

    fn index_of(&self, offset: u64) -> Option<usize> {
        let i = self.pieces.partition_point(|p| p.end <= offset);
        (i < self.pieces.len()).then_some(i)
    }

    /// Bytes from 0 on, without a gap, in the spool.
    pub(super) fn prefix(&self) -> u64 {
        self.readable_from(0)
    }

    /// Where the bytes in the spool from `offset` on, without a gap, end (`offset`: none).
    pub(super) fn readable_from(&self, offset: u64) -> u64 {
        let Some(i) = self.index_of(offset) else {
            return offset;
        };
        let mut end = offset;
        // Pieces are contiguous: each next one starts where the last one ended.
        for piece in &self.pieces[i..] {
            let frontier = piece.frontier();
            if frontier <= end {
                break;
            }
            end = frontier;
            if frontier < piece.end {
                break;
            }
        }
        end
    }

    /// A reader waits at `offset`, beyond what is in the spool; true if this is news for the
    /// leader (an offset no piece in flight will reach).
    pub(super) fn want(&mut self, offset: u64) -> bool {
        let Some(i) = self.index_of(offset) else {
            return false;
        };
        if self.pieces[i].state != State::Pending || self.wanted.len() >= MAX_WANTED {
            return false;
        }
        if self.wanted.contains(&offset) {
            return false;
        }
        self.wanted.push_back(offset);
        true
    }

    /// The next offset a reader waits for that still needs its own request.
    pub(super) fn next_wanted(&mut self) -> Option<(u64, u64)> {
        while let Some(offset) = self.wanted.pop_front() {
            if let Some(claimed) = self.claim_at(offset) {
                return Some(claimed);
            }
        }
        None
    }

    /// Some piece waits for a request.
    pub(super) fn has_pending(&self) -> bool {
        self.pieces.iter().any(|p| p.state == State::Pending)
    }

    /// Some reader waits for bytes no piece in flight brings.
    pub(super) fn has_wanted(&self) -> bool {
        !self.wanted.is_empty()
    }

    /// Every byte is in the spool.
    #[cfg(test)]
    pub(super) fn is_complete(&self) -> bool {
        self.pieces.iter().all(|p| p.state == State::Done)
    }

    pub(super) fn progress(&self) -> ChunkProgress {
        let mut progress = ChunkProgress::default();
        for piece in &self.pieces {
            progress.received = progress.received.saturating_add(piece.filled);
            match piece.state {
                State::Fetching => progress.fetching += 1,
                State::Pending => progress.waiting += 1,
                State::Done => {}
            }
        }
        progress
    }

    /// How many entries the plan holds (bounded by pieces in flight and gaps, not the size).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.pieces.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_claimed_in_order_and_the_prefix_grows_over_finished_ones() {
        let mut plan = FillPlan::new(100, 10, 10);
        assert_eq!(plan.claim_next(), Some((10, 20)));
        assert_eq!(plan.claim_next(), Some((20, 30)));
        plan.filled(10, 10);
        assert_eq!(plan.prefix(), 0, "the first piece is still missing");
        assert_eq!(plan.readable_from(12), 20);
        plan.filled(20, 4);
        assert_eq!(plan.readable_from(12), 24, "on into the next piece's bytes");
        plan.filled(0, 7);
        assert_eq!(plan.prefix(), 7);
        plan.filled(0, 10);
        assert_eq!(plan.prefix(), 24);
        plan.filled(20, 10);
        assert_eq!(plan.prefix(), 30);
        assert!(!plan.is_complete());
        while let Some((start, end)) = plan.claim_next() {
            plan.filled(start, end - start);
        }
        assert!(plan.is_complete());
        assert_eq!(plan.prefix(), 100);
        assert_eq!(plan.len(), 1, "finished pieces merge");
    }

    #[test]
    fn a_wanted_offset_gets_its_own_piece_and_the_fill_skips_it() {
        let mut plan = FillPlan::new(100, 10, 10);
        assert!(plan.want(95));
        assert!(!plan.want(95), "asked once");
        assert_eq!(plan.next_wanted(), Some((95, 100)));
        assert!(!plan.want(97), "in flight already");
        assert_eq!(plan.next_wanted(), None);
        assert!(!plan.want(5), "the first piece is in flight");
        let mut claimed = Vec::new();
        while let Some(piece) = plan.claim_next() {
            claimed.push(piece);
        }
        assert_eq!(
            claimed.last(),
            Some(&(90, 95)),
            "the fill stops where it begins"
        );
        assert_eq!(claimed.len(), 9);
        plan.filled(95, 5);
        assert_eq!(plan.readable_from(95), 100);
        assert_eq!(plan.readable_from(90), 90);
    }

    #[test]
    fn a_blob_within_the_first_piece_is_one_piece() {
        let mut plan = FillPlan::new(5, 10, 10);
        assert_eq!(plan.claim_next(), None);
        plan.filled(0, 5);
        assert!(plan.is_complete());
    }
}
