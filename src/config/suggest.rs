//! "Did you mean": how far one name is from another, and the nearest of a list.

/// The optimal-string-alignment distance of `a` and `b`, case-insensitive: insertions,
/// deletions, substitutions and transpositions of two neighbours each count 1 (`PSOT` is 1 from
/// `POST`).
pub fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().map(|c| c.to_ascii_uppercase()).collect();
    let b: Vec<char> = b.chars().map(|c| c.to_ascii_uppercase()).collect();
    // three rows of the table: i-2, i-1, i
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut row: Vec<usize> = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        row[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (prev[j] + 1).min(row[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(before[j - 2] + 1);
            }
            row[j] = d;
        }
        std::mem::swap(&mut before, &mut prev);
        std::mem::swap(&mut prev, &mut row);
    }
    prev[b.len()]
}

/// Whether `a` reads as a slip of `b`: at most 2 edits, and at most one per two characters of
/// `a` (`PSTO` is POST; `A B` is not ACL).
pub fn close(a: &str, b: &str) -> bool {
    let d = distance(a, b);
    d <= 2 && 2 * d <= a.chars().count()
}

/// The nearest of `names` to `given` if it is [`close`]; the first of equally near ones.
pub fn nearest<'n>(given: &str, names: impl IntoIterator<Item = &'n str>) -> Option<&'n str> {
    names
        .into_iter()
        .filter(|n| close(given, n))
        .min_by_key(|n| distance(given, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(distance("PSOT", "POST"), 1);
        assert_eq!(distance("post", "POST"), 0);
        assert_eq!(distance("GE", "GET"), 1);
        assert_eq!(distance("PUTT", "PUT"), 1);
        assert_eq!(distance("DLETE", "DELETE"), 1);
        assert_eq!(distance("OPTINOS", "OPTIONS"), 1);
        assert_eq!(distance("abc", ""), 3);
        assert_eq!(distance("", ""), 0);
        assert_eq!(distance("kitten", "sitting"), 3);
    }

    #[test]
    fn nearest_names() {
        let m = ["GET", "HEAD", "POST", "PUT", "PATCH"];
        assert_eq!(nearest("PSOT", m), Some("POST"));
        assert_eq!(nearest("g3t", m), Some("GET"));
        assert_eq!(nearest("BREW", m), None);
        // two edits are not a slip of a two- or three-letter word
        assert_eq!(nearest("HE", m), None);
        assert_eq!(nearest("A B", ["ACL"]), None);
        assert_eq!(nearest("PSTO", m), Some("POST"));
        assert_eq!(nearest("HEA", m), Some("HEAD"));
    }
}
