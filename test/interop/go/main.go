// Command interop checks edge-runner's log output with golang.org/x/mod/sumdb/note and .../tlog only:
// an independent implementation that owes nothing to this project.
//
// It reads one JSON request on stdin:
//
//	{"verifierKey": "name+hash+key", "note": "signed checkpoint",
//	 "leafIndex": 3, "leafData": "base64", "leafHash": "base64", "inclusionProof": ["base64", ...],
//	 "oldSize": 2, "oldRoot": "base64", "consistencyProof": ["base64", ...]}
//
// and writes {"ok": true, "origin": ..., "size": ..., "root": ...} on success. On any failure it writes
// {"ok": false, "step": ..., "error": ...} and exits with status 1. Consistency is checked only when
// oldSize is above zero.
package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type request struct {
	VerifierKey      string   `json:"verifierKey"`
	Note             string   `json:"note"`
	LeafIndex        int64    `json:"leafIndex"`
	LeafData         string   `json:"leafData"`
	LeafHash         string   `json:"leafHash"`
	InclusionProof   []string `json:"inclusionProof"`
	OldSize          int64    `json:"oldSize"`
	OldRoot          string   `json:"oldRoot"`
	ConsistencyProof []string `json:"consistencyProof"`
}

type response struct {
	OK     bool   `json:"ok"`
	Step   string `json:"step,omitempty"`
	Error  string `json:"error,omitempty"`
	Origin string `json:"origin,omitempty"`
	Size   int64  `json:"size,omitempty"`
	Root   string `json:"root,omitempty"`
}

func fail(step string, err error) {
	_ = json.NewEncoder(os.Stdout).Encode(response{OK: false, Step: step, Error: err.Error()})
	os.Exit(1)
}

func parseHash(s string) (tlog.Hash, error) {
	var h tlog.Hash
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return h, err
	}
	if len(b) != tlog.HashSize {
		return h, fmt.Errorf("hash is %d bytes, want %d", len(b), tlog.HashSize)
	}
	copy(h[:], b)
	return h, nil
}

func parseHashes(list []string) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, 0, len(list))
	for _, s := range list {
		h, err := parseHash(s)
		if err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, nil
}

// parseCheckpoint reads a C2SP tlog-checkpoint body: origin, size, base64 root, then extension lines.
// (tlog.ParseTree only accepts the origin "go.sum database tree".)
func parseCheckpoint(text string) (string, int64, tlog.Hash, error) {
	lines := strings.SplitN(text, "\n", 4)
	if len(lines) < 4 {
		return "", 0, tlog.Hash{}, fmt.Errorf("checkpoint has fewer than three lines")
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 || lines[1] != strconv.FormatInt(size, 10) {
		return "", 0, tlog.Hash{}, fmt.Errorf("malformed size %q", lines[1])
	}
	root, err := parseHash(lines[2])
	if err != nil {
		return "", 0, tlog.Hash{}, fmt.Errorf("malformed root: %v", err)
	}
	return lines[0], size, root, nil
}

func main() {
	input, err := io.ReadAll(io.LimitReader(os.Stdin, 1<<20))
	if err != nil {
		fail("read", err)
	}
	var req request
	if err := json.Unmarshal(input, &req); err != nil {
		fail("read", err)
	}

	verifier, err := note.NewVerifier(req.VerifierKey)
	if err != nil {
		fail("verifier-key", err)
	}
	n, err := note.Open([]byte(req.Note), note.VerifierList(verifier))
	if err != nil {
		fail("note", err)
	}
	origin, size, root, err := parseCheckpoint(n.Text)
	if err != nil {
		fail("checkpoint", err)
	}

	leafHash, err := parseHash(req.LeafHash)
	if err != nil {
		fail("leaf-hash", err)
	}
	if req.LeafData != "" {
		data, err := base64.StdEncoding.DecodeString(req.LeafData)
		if err != nil {
			fail("leaf-data", err)
		}
		if tlog.RecordHash(data) != leafHash {
			fail("leaf-data", fmt.Errorf("tlog.RecordHash(leafData) differs from leafHash"))
		}
	}
	proof, err := parseHashes(req.InclusionProof)
	if err != nil {
		fail("inclusion-proof", err)
	}
	if err := tlog.CheckRecord(tlog.RecordProof(proof), size, root, req.LeafIndex, leafHash); err != nil {
		fail("inclusion-proof", err)
	}

	if req.OldSize > 0 {
		oldRoot, err := parseHash(req.OldRoot)
		if err != nil {
			fail("consistency-proof", err)
		}
		cproof, err := parseHashes(req.ConsistencyProof)
		if err != nil {
			fail("consistency-proof", err)
		}
		if err := tlog.CheckTree(tlog.TreeProof(cproof), size, root, req.OldSize, oldRoot); err != nil {
			fail("consistency-proof", err)
		}
	}

	_ = json.NewEncoder(os.Stdout).Encode(response{OK: true, Origin: origin, Size: size, Root: base64.StdEncoding.EncodeToString(root[:])})
}
