package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// record is what the plugin keeps of one attachment, keyed by network,
// container ID and interface: which agent it made and in which namespace.
// DEL needs it when the runtime no longer names the namespace (containerd's
// second DEL has CNI_NETNS=""), and it keeps DEL of an old sandbox from
// detaching the agent of a newer sandbox of the same pod.
type record struct {
	Agent string `json:"agent"`
	Netns string `json:"netns"`
}

// recordPath is where the record of containerID's interface ifName lives.
// Neither a container ID nor an interface name may contain ':'.
func recordPath(conf *netConf, containerID, ifName string) string {
	return filepath.Join(conf.DataDir, conf.Name, containerID+":"+ifName)
}

// readRecord returns the record at path; ok is false when there is none.
func readRecord(path string) (rec record, ok bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return record{}, false, nil
	}
	if err != nil {
		return record{}, false, fmt.Errorf("read attachment record: %w", err)
	}
	if err := json.Unmarshal(b, &rec); err != nil || rec.Agent == "" {
		return record{}, false, fmt.Errorf("attachment record %s is damaged (%v); remove it", path, err)
	}
	return rec, true, nil
}

// writeRecord writes rec to path atomically (a crash leaves the old record
// or the new one, never half of one).
func writeRecord(path string, rec record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("write attachment record: %w", err)
	}
	if err := writeFileAtomic(path, b, 0o600); err != nil {
		return fmt.Errorf("write attachment record: %w", err)
	}
	return nil
}

// writeFileAtomic replaces path with data, mode perm, through a temporary
// file beside it and a rename: a reader (a runtime, the plugin's next
// command) sees the old file or the new one, never half of one, and one
// that has the old one open keeps it. On error no temporary file is left.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(perm)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// removeRecord removes the record at path; a missing one is not an error.
func removeRecord(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove attachment record: %w", err)
	}
	return nil
}
