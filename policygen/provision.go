package policygen

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/clawnet/clawnet/policy"
)

// ProvisionArgs say what Provision generates and where the policy is kept.
type ProvisionArgs struct {
	// File is where the policy is kept (a policy_dir's NAME.yaml). It is
	// read through Options.ReadFile, for the approvals it holds and to
	// compare with, and written through WriteNew only when it is not there.
	File string
	// Files are the agent's configuration files, read as FromFiles reads
	// them.
	Files   []string
	Options Options
	// Generate shapes the policy. Its Existing is set from File.
	Generate GenerateOptions
	// WriteNew writes File, which was not there, whole.
	WriteNew func(file string, data []byte) error
}

// FileState says what Provision found in, or did to, its File.
type FileState uint8

const (
	Written  FileState = iota // File was not there: the policy was written to it
	UpToDate                  // File says the same (Equivalent): left as it is
	Differs                   // File says something else: left as it is
)

// Provisioned is what Provision did.
type Provisioned struct {
	State FileState
	Old   []byte // File as it was; nil when it was not there
	Gen   []byte // the generated policy
	// Warnings are the configuration's, to show even when Provision fails
	// after reading it.
	Warnings []string
}

// NameError is a policy name the policy language refuses: the one way a
// generated policy can fail to parse.
type NameError struct {
	Name string
	Err  error
}

func (e *NameError) Error() string { return fmt.Sprintf("policy name %q: %v", e.Name, e.Err) }
func (e *NameError) Unwrap() error { return e.Err }

// Provision generates the policy an agent's configuration files call for
// and keeps it in a.File: it writes a file that is not there, uses one
// that says the same (approvals of pending rules kept while their files
// are unchanged), and never overwrites one that says something else (it
// may have been edited, or be another agent's): that is State Differs,
// for the caller to refuse. A File that is there but not a valid policy
// is an error naming its line; a name the policy language refuses is a
// *NameError, found before anything is written. It is the first step of
// both `clawnet run --agent-config` and clawnetd's io.clawnet.agent-config
// label; the reload that follows is theirs.
func Provision(a ProvisionArgs) (Provisioned, error) {
	var p Provisioned
	old, err := a.Options.ReadFile(a.File)
	there := err == nil
	switch {
	case there:
		if a.Generate.Existing, err = policy.Parse(a.File, old); err != nil {
			return p, err
		}
		p.Old = old
	case !errors.Is(err, fs.ErrNotExist):
		return p, err
	}
	if p.Gen, p.Warnings, err = FromFiles(a.Files, a.Options, a.Generate); err != nil {
		return p, err
	}
	// Generate writes what parses and compiles; a bad name is the one way
	// to fail here, and it is better told before the file is written.
	if f, errs := policy.ParseAll(a.File, p.Gen); len(errs) > 0 {
		return p, &NameError{Name: a.Generate.Name, Err: errs[0]}
	} else if _, err := policy.Compile(f, policy.Options{}); err != nil {
		return p, err
	}
	switch {
	case !there:
		if err := a.WriteNew(a.File, p.Gen); err != nil {
			return p, err
		}
		p.State = Written
	case Equivalent(p.Old, p.Gen):
		p.State = UpToDate
	default:
		p.State = Differs
	}
	return p, nil
}
