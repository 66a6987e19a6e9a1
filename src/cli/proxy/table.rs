//! Aligned text tables as istioctl prints them (Go's `text/tabwriter` with no flags): every
//! cell but a row's last is padded to its column's widest cell plus `padding` spaces; the last
//! cell is written as it is, so no line ends in spaces. Widths count characters.

/// A table under construction.
#[derive(Debug, Clone)]
pub struct Table {
    padding: usize,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(padding: usize) -> Table {
        Table {
            padding,
            rows: Vec::new(),
        }
    }

    pub fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0usize; columns];
        for row in &self.rows {
            // A row's last cell is not part of any column.
            for (j, cell) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
                widths[j] = widths[j].max(cell.chars().count() + self.padding);
            }
        }
        let mut out = String::new();
        for row in &self.rows {
            for (j, cell) in row.iter().enumerate() {
                out.push_str(cell);
                if j + 1 < row.len() {
                    let pad = widths[j].saturating_sub(cell.chars().count());
                    out.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_padded_and_last_cells_are_not() {
        let mut t = Table::new(5);
        t.row(["NAME", "CLUSTER", "VERSION"]);
        t.row(["client-0.default", "Kubernetes", "1.31"]);
        assert_eq!(
            t.render(),
            "NAME                 CLUSTER        VERSION\n\
             client-0.default     Kubernetes     1.31\n"
        );
    }

    #[test]
    fn width_counts_characters_and_empty_cells_keep_their_column() {
        let mut t = Table::new(1);
        t.row(["é", "", "x"]);
        t.row(["ab", "c", "y"]);
        assert_eq!(t.render(), "é    x\nab c y\n");
    }
}
