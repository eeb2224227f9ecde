// pgx v4 client for the driver conformance lab: JSON lines in on stdin, JSON lines out on
// stdout (see tests/drivers/clients for the protocol). Built in GOPATH mode against
// Debian's golang-github-jackc-pgx-v4-dev; .ci/drivers sets main.version to its package
// version.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v4"
)

var version = "unknown"

const grace = 2 * time.Second // hard wall-clock limit is timeout_ms + grace

type request struct {
	ID        string            `json:"id"`
	Target    string            `json:"target"`
	Env       map[string]string `json:"env"`
	User      string            `json:"user"`
	TimeoutMs int64             `json:"timeout_ms"`
}

type ready struct {
	Ready   bool   `json:"ready"`
	Driver  string `json:"driver"`
	Version string `json:"version"`
}

type response struct {
	ID    *string `json:"id"`
	OK    bool    `json:"ok"`
	Error string  `json:"error"`
}

// attempt connects once; a panic anywhere in pgx becomes an error, like in the lib/pq client.
func attempt(req request) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(req.TimeoutMs)*time.Millisecond)
	defer cancel()
	conn, err := pgx.Connect(ctx, req.Target) // reads PG* variables and merges the target over them
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

func main() {
	emit(ready{true, "pgx", "pgx v4 " + version})
	in := bufio.NewReader(os.Stdin)
	for {
		line, readErr := in.ReadString('\n')
		if strings.TrimSpace(line) != "" {
			emit(handle(line))
		}
		if readErr != nil {
			os.Exit(0) // EOF
		}
	}
}

func handle(line string) response {
	var req request
	if err := json.Unmarshal([]byte(line), &req); err != nil {
		return response{Error: oneLine(err)}
	}
	setEnv(req.Env)
	// The attempt runs in its own goroutine so that a hung one can be abandoned.
	done := make(chan error, 1)
	go func() { done <- attempt(req) }()
	var err error
	select {
	case err = <-done:
	case <-time.After(time.Duration(req.TimeoutMs)*time.Millisecond + grace):
		err = errors.New("hard timeout: attempt abandoned")
	}
	resp := response{ID: &req.ID, OK: err == nil}
	if err != nil {
		resp.Error = oneLine(err)
	}
	return resp
}

func setEnv(env map[string]string) {
	for _, kv := range os.Environ() {
		name := strings.SplitN(kv, "=", 2)[0]
		switch name {
		case "NODE_TLS_REJECT_UNAUTHORIZED", "NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "SSL_CERT_DIR":
			os.Unsetenv(name)
		default:
			if strings.HasPrefix(name, "PG") {
				os.Unsetenv(name)
			}
		}
	}
	for k, v := range env {
		os.Setenv(k, v)
	}
}

func oneLine(err error) string {
	r := []rune(strings.Join(strings.Fields(err.Error()), " "))
	if len(r) > 300 {
		r = r[:300]
	}
	return string(r)
}

func emit(v interface{}) {
	b, _ := json.Marshal(v)
	os.Stdout.Write(append(b, '\n')) // os.Stdout is unbuffered
}
