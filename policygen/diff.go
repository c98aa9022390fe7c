package policygen

import (
	"fmt"
	"strings"
)

// Diff is a unified diff of two texts by lines, with two lines of
// context, or "" when they are equal. It is for people reading what a
// regeneration would change; it needs no external diff.
func Diff(aName string, a []byte, bName string, b []byte) string {
	if string(a) == string(b) {
		return ""
	}
	x, y := splitLines(string(a)), splitLines(string(b))
	// The longest common subsequence by dynamic programming: policy files
	// are small. Past the bound, every line counts as changed.
	const maxCells = 4 << 20
	var ops []byte // ' ', '-', '+' for each line of the edit script
	if len(x)*len(y) <= maxCells {
		n, m := len(x), len(y)
		lcs := make([][]int32, n+1)
		for i := range lcs {
			lcs[i] = make([]int32, m+1)
		}
		for i := n - 1; i >= 0; i-- {
			for j := m - 1; j >= 0; j-- {
				if x[i] == y[j] {
					lcs[i][j] = lcs[i+1][j+1] + 1
				} else {
					lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
				}
			}
		}
		i, j := 0, 0
		for i < n || j < m {
			switch {
			case i < n && j < m && x[i] == y[j]:
				ops = append(ops, ' ')
				i++
				j++
			case j < m && (i == n || lcs[i][j+1] >= lcs[i+1][j]):
				ops = append(ops, '+')
				j++
			default:
				ops = append(ops, '-')
				i++
			}
		}
	} else {
		for range x {
			ops = append(ops, '-')
		}
		for range y {
			ops = append(ops, '+')
		}
	}
	var out strings.Builder
	fmt.Fprintf(&out, "--- %s\n+++ %s\n", aName, bName)
	const ctx = 2
	// Walk the script, printing hunks of changes with their context.
	type pos struct{ op, i, j int }
	var lines []pos
	i, j := 0, 0
	for k, op := range ops {
		lines = append(lines, pos{k, i, j})
		switch op {
		case ' ':
			i++
			j++
		case '-':
			i++
		case '+':
			j++
		}
	}
	for k := 0; k < len(ops); {
		if ops[k] == ' ' {
			k++
			continue
		}
		start := max(0, k-ctx)
		end := k
		for end < len(ops) {
			if ops[end] != ' ' {
				end++
				continue
			}
			run := end
			for run < len(ops) && ops[run] == ' ' {
				run++
			}
			if run-end > 2*ctx || run == len(ops) {
				end = min(end+ctx, len(ops))
				break
			}
			end = run
		}
		ai, bj := lines[start].i, lines[start].j
		na, nb := 0, 0
		for _, op := range ops[start:end] {
			if op != '+' {
				na++
			}
			if op != '-' {
				nb++
			}
		}
		fmt.Fprintf(&out, "@@ -%d,%d +%d,%d @@\n", ai+1, na, bj+1, nb)
		for q := start; q < end; q++ {
			p := lines[q]
			switch ops[q] {
			case ' ':
				out.WriteString(" " + x[p.i] + "\n")
			case '-':
				out.WriteString("-" + x[p.i] + "\n")
			case '+':
				out.WriteString("+" + y[p.j] + "\n")
			}
		}
		k = end
	}
	return out.String()
}

func splitLines(s string) []string {
	s = strings.TrimSuffix(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}
