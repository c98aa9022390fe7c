package policygen

import (
	"errors"
	"io/fs"
	"os"
	"strings"
	"testing"
)

// memFiles is a file system in a map, for Provision's ReadFile and
// WriteNew; writes counts the files written.
type memFiles struct {
	files  map[string][]byte
	writes int
}

func (m *memFiles) read(name string) ([]byte, error) {
	data, ok := m.files[name]
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return data, nil
}

func (m *memFiles) writeNew(name string, data []byte) error {
	if _, ok := m.files[name]; ok {
		return &fs.PathError{Op: "link", Path: name, Err: fs.ErrExist}
	}
	m.files[name] = data
	m.writes++
	return nil
}

// TestProvision: Provision writes a policy file that is not there, uses
// one that says the same (an approval kept while its file is unchanged),
// and never writes over one that says something else; a name the policy
// language refuses, a policy file that is not valid and a configuration
// file that is missing are errors, and nothing is written.
func TestProvision(t *testing.T) {
	mcp, err := os.ReadFile("testdata/claude-code/repo/.mcp.json")
	if err != nil {
		t.Fatal(err)
	}
	const file, conf = "/policies/repo.yaml", "/repo/.mcp.json"
	m := &memFiles{files: map[string][]byte{conf: mcp}}
	args := func(name string, files ...string) ProvisionArgs {
		return ProvisionArgs{
			File:     file,
			Files:    files,
			Options:  Options{ReadFile: m.read, Dir: "/repo"},
			Generate: GenerateOptions{Name: name},
			WriteNew: m.writeNew,
		}
	}

	p, err := Provision(args("repo", conf))
	if err != nil || p.State != Written || p.Old != nil || string(m.files[file]) != string(p.Gen) || m.writes != 1 {
		t.Fatalf("Provision(no file) = %v, %v; wrote %d, want Written", p.State, err, m.writes)
	}
	if !strings.Contains(string(p.Gen), "pending:") {
		t.Fatalf("a project's .mcp.json gave no pending rules:\n%s", p.Gen)
	}
	if p, err = Provision(args("repo", conf)); err != nil || p.State != UpToDate || m.writes != 1 {
		t.Errorf("Provision(same file) = %v, %v; wrote %d, want UpToDate", p.State, err, m.writes)
	}

	// An approval holds while the project's file is unchanged, and is
	// another policy once it changed.
	approved, _, err := Approve(file, m.files[file], nil, true)
	if err != nil {
		t.Fatal(err)
	}
	m.files[file] = approved
	if p, err = Provision(args("repo", conf)); err != nil || p.State != UpToDate {
		t.Errorf("Provision(approved file) = %v, %v; want UpToDate", p.State, err)
	}
	m.files[conf] = append([]byte("\n"), mcp...)
	if p, err = Provision(args("repo", conf)); err != nil || p.State != Differs || string(p.Old) != string(approved) {
		t.Errorf("Provision(approved file, project file changed) = %v, %v; want Differs", p.State, err)
	}
	if string(m.files[file]) != string(approved) || m.writes != 1 {
		t.Error("Provision wrote over a file that says something else")
	}

	delete(m.files, file)
	var ne *NameError
	if _, err = Provision(args("Upper", conf)); !errors.As(err, &ne) || ne.Name != "Upper" {
		t.Errorf("Provision(name Upper) = %v, want a *NameError", err)
	}
	m.files[file] = []byte("version: nonsense\n")
	if _, err = Provision(args("repo", conf)); err == nil || !strings.Contains(err.Error(), file) {
		t.Errorf("Provision(invalid policy file) = %v, want an error naming it", err)
	}
	delete(m.files, file)
	if _, err = Provision(args("repo", "/repo/missing.json")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Provision(missing configuration) = %v, want it not found", err)
	}
	if m.writes != 1 {
		t.Errorf("wrote %d files, want 1", m.writes)
	}
}
