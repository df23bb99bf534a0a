//! Item text (titles, descriptions) as a content signal: TF-IDF cosine between items,
//! through an inverted index. It lets a brand-new item be recommended from its text alone,
//! and adds "same kind of product" evidence to the co-occurrence signal.

use hashbrown::HashMap;
use parking_lot::RwLock;

/// Tokens too common to tell items apart (in more than this share of the items) are skipped
/// when scoring.
const MAX_DF_SHARE: f32 = 0.2;

/// Lowercase alphanumeric words of at least two characters, each once, in first-seen order.
///
/// ```
/// assert_eq!(recofast_core::text::tokenize("Jumbo Bag RED-retrospot, red!"), vec!["jumbo", "bag", "red", "retrospot"]);
/// ```
pub fn tokenize(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for w in text.split(|c: char| !c.is_alphanumeric()) {
        if w.chars().count() < 2 {
            continue;
        }
        let w = w.to_lowercase();
        if !out.contains(&w) {
            out.push(w);
        }
    }
    out
}

#[derive(Default)]
struct Inner {
    vocab: HashMap<Box<str>, u32>,
    words: Vec<Box<str>>,
    postings: Vec<Vec<u32>>,
    item_tokens: Vec<Vec<u32>>,
    n_docs: u32,
}

impl Inner {
    fn idf(&self, t: u32) -> f32 {
        let df = self.postings[t as usize].len().max(1) as f32;
        ((self.n_docs.max(1) as f32) / df).ln().max(0.0)
    }

    fn norm(&self, item: u32) -> f32 {
        match self.item_tokens.get(item as usize) {
            Some(ts) => ts.iter().map(|&t| self.idf(t).powi(2)).sum::<f32>().sqrt(),
            None => 0.0,
        }
    }
}

/// The text index of a model's items. See the module docs.
#[derive(Default)]
pub struct TextIndex {
    inner: RwLock<Inner>,
}

impl TextIndex {
    /// Sets (or replaces) the text of an item row.
    pub fn set(&self, item: u32, text: &str) {
        let tokens = tokenize(text);
        let mut g = self.inner.write();
        let g = &mut *g;
        let i = item as usize;
        if g.item_tokens.len() <= i {
            g.item_tokens.resize(i + 1, Vec::new());
        }
        let old = std::mem::take(&mut g.item_tokens[i]);
        if old.is_empty() && !tokens.is_empty() {
            g.n_docs += 1;
        } else if !old.is_empty() && tokens.is_empty() {
            g.n_docs -= 1;
        }
        for t in old {
            g.postings[t as usize].retain(|&x| x != item);
        }
        let mut ids = Vec::with_capacity(tokens.len());
        for w in tokens {
            let t = match g.vocab.get(w.as_str()) {
                Some(&t) => t,
                None => {
                    let t = g.words.len() as u32;
                    g.vocab.insert(w.clone().into(), t);
                    g.words.push(w.into());
                    g.postings.push(Vec::new());
                    t
                }
            };
            g.postings[t as usize].push(item);
            ids.push(t);
        }
        g.item_tokens[i] = ids;
    }

    /// The words of an item row (empty when it has no text).
    pub fn words_of(&self, item: u32) -> Vec<String> {
        let g = self.inner.read();
        g.item_tokens.get(item as usize).map(|ts| ts.iter().map(|&t| g.words[t as usize].to_string()).collect()).unwrap_or_default()
    }

    /// Whether some item's text has the (lowercase) word.
    pub fn has_word(&self, word: &str) -> bool {
        let g = self.inner.read();
        g.vocab.get(word).is_some_and(|&t| !g.postings[t as usize].is_empty())
    }

    /// Whether an item row has text (is in the catalogue).
    pub fn has_text(&self, item: u32) -> bool {
        self.inner.read().item_tokens.get(item as usize).is_some_and(|t| !t.is_empty())
    }

    /// Whether any item has text.
    pub fn is_empty(&self) -> bool {
        self.inner.read().n_docs == 0
    }

    /// Adds `weight_h * cos(h, j)` to `acc[j]` for each (h, weight_h) in `from`; returns the
    /// largest value written.
    pub fn add_similar(&self, from: &[(u32, f32)], acc: &mut [f32]) -> f32 {
        self.add_similar_by(from, acc, |j| Some(j as usize))
    }

    /// [`TextIndex::add_similar`] into `acc[place(j)]` (items without a place are skipped).
    pub fn add_similar_by(&self, from: &[(u32, f32)], acc: &mut [f32], place: impl Fn(u32) -> Option<usize>) -> f32 {
        let g = self.inner.read();
        if g.n_docs == 0 {
            return 0.0;
        }
        let max_df = ((g.n_docs as f32 * MAX_DF_SHARE).ceil() as usize).max(2);
        let mut best = 0f32;
        let mut norms: HashMap<u32, f32> = HashMap::new();
        for &(h, wh) in from {
            let Some(ts) = g.item_tokens.get(h as usize) else { continue };
            let nh = g.norm(h);
            if nh <= 0.0 {
                continue;
            }
            for &t in ts {
                let post = &g.postings[t as usize];
                if post.len() > max_df {
                    continue;
                }
                let idf2 = g.idf(t).powi(2);
                for &j in post {
                    if j == h {
                        continue;
                    }
                    let nj = *norms.entry(j).or_insert_with(|| g.norm(j));
                    if let Some(a) = place(j).and_then(|p| acc.get_mut(p)) {
                        *a += wh * idf2 / (nh * nj.max(1e-6));
                        best = best.max(*a);
                    }
                }
            }
        }
        best
    }
}

impl TextIndex {
    /// Adds the TF-IDF match of a query (already tokenised words) to `acc[j]` for every
    /// item `j` with one of the words: `Σ idf(w)² / norm(j)`. Returns the largest value
    /// written (0 when no item has any of the words).
    pub fn add_query<S: AsRef<str>>(&self, words: &[S], acc: &mut [f32]) -> f32 {
        self.add_query_by(words, acc, |j| Some(j as usize))
    }

    /// [`TextIndex::add_query`] into `acc[place(j)]` (items without a place are skipped).
    pub fn add_query_by<S: AsRef<str>>(&self, words: &[S], acc: &mut [f32], place: impl Fn(u32) -> Option<usize>) -> f32 {
        let g = self.inner.read();
        if g.n_docs == 0 {
            return 0.0;
        }
        let mut best = 0f32;
        let mut norms: HashMap<u32, f32> = HashMap::new();
        for w in words {
            let Some(&t) = g.vocab.get(w.as_ref()) else { continue };
            // Unlike item-to-item similarity, a query word is never too common: "lamp"
            // must find the lamps even in a shop of lamps.
            let idf2 = g.idf(t).powi(2).max(1e-3);
            for &j in &g.postings[t as usize] {
                let nj = *norms.entry(j).or_insert_with(|| g.norm(j));
                if let Some(a) = place(j).and_then(|p| acc.get_mut(p)) {
                    *a += idf2 / nj.max(1e-3);
                    best = best.max(*a);
                }
            }
        }
        best
    }

    /// The `k` items whose text is most like `item`'s (TF-IDF cosine), among the items
    /// `keep` accepts; best first.
    pub fn similar_to(&self, item: u32, k: usize, keep: impl Fn(u32) -> bool) -> Vec<(u32, f32)> {
        let g = self.inner.read();
        let Some(ts) = g.item_tokens.get(item as usize) else { return Vec::new() };
        let nh = g.norm(item);
        if nh <= 0.0 || k == 0 {
            return Vec::new();
        }
        let max_df = ((g.n_docs as f32 * MAX_DF_SHARE).ceil() as usize).max(2);
        let mut acc: HashMap<u32, f32> = HashMap::new();
        for &t in ts {
            let post = &g.postings[t as usize];
            if post.len() > max_df {
                continue;
            }
            let idf2 = g.idf(t).powi(2);
            for &j in post {
                if j != item && keep(j) {
                    *acc.entry(j).or_insert(0.0) += idf2;
                }
            }
        }
        let mut v: Vec<(u32, f32)> = acc.into_iter().map(|(j, s)| (j, s / (nh * g.norm(j).max(1e-6)))).filter(|x| x.1 > 0.0).collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(k);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similar_titles_score_higher_and_updates_replace() {
        let x = TextIndex::default();
        x.set(0, "jumbo bag red retrospot");
        x.set(1, "jumbo bag pink polkadot");
        x.set(2, "regency teacup and saucer");
        x.set(3, "red retrospot cake stand");
        for k in 4..20u32 {
            x.set(k, &format!("filler{k} thing{k}"));
        }
        let mut acc = vec![0.0; 20];
        let best = x.add_similar(&[(0, 1.0)], &mut acc);
        assert_eq!(acc[0], 0.0, "an item is not its own neighbour");
        assert!(acc[1] > 0.0 && acc[3] > 0.0 && acc[2] == 0.0, "{acc:?}");
        assert_eq!(best, acc[1].max(acc[3]));
        x.set(2, "red retrospot teacup");
        assert_eq!(x.words_of(2), vec!["red", "retrospot", "teacup"]);
        let mut acc = vec![0.0; 20];
        x.add_similar(&[(0, 1.0)], &mut acc);
        assert!(acc[2] > 0.0);
    }

    #[test]
    fn queries_and_nearest_texts() {
        let x = TextIndex::default();
        x.set(0, "desk lamp brass");
        x.set(1, "floor lamp");
        x.set(2, "tea mug");
        x.set(3, "brass candle holder");
        let mut acc = vec![0.0; 4];
        let best = x.add_query(&["lamp"], &mut acc);
        assert!(acc[0] > 0.0 && acc[1] > 0.0 && acc[2] == 0.0 && acc[3] == 0.0, "{acc:?}");
        assert_eq!(best, acc[0].max(acc[1]));
        assert_eq!(x.add_query(&["sofa"], &mut vec![0.0; 4]), 0.0);
        let near = x.similar_to(0, 5, |_| true);
        assert_eq!(near.iter().map(|n| n.0).collect::<Vec<_>>(), vec![1, 3], "{near:?}");
        assert_eq!(x.similar_to(0, 5, |j| j != 3).len(), 1);
    }
}
