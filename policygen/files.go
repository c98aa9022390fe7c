package policygen

import "bytes"

// FromFiles reads the agent configuration files named files through
// opts.ReadFile (each by the name given: it appears in every from: note),
// merges what they need, and writes the policy Generate writes for it,
// ending in a newline, with the warnings to show. It is what `clawnet
// policy generate` does, for callers other than the CLI (clawnetd, for a
// container labelled with its agent's configuration).
func FromFiles(files []string, opts Options, o GenerateOptions) ([]byte, []string, error) {
	var rs []*Result
	for _, f := range files {
		data, err := opts.ReadFile(f)
		if err != nil {
			return nil, nil, err
		}
		r, err := Read(f, data, opts)
		if err != nil {
			return nil, nil, err
		}
		rs = append(rs, r)
	}
	r := Merge(rs...)
	gen := Generate(r, o)
	if !bytes.HasSuffix(gen, []byte("\n")) {
		gen = append(gen, '\n')
	}
	return gen, r.Warnings, nil
}
