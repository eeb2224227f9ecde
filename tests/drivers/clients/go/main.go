// Go client for the driver conformance lab, `client pq` (lib/pq) or `client pgx` (pgx v4):
// JSON lines in on stdin, JSON lines out on stdout (see tests/drivers/clients for the
// protocol). Built in GOPATH mode against Debian's golang-github-lib-pq-dev and
// golang-github-jackc-pgx-v4-dev; .ci/drivers sets the two versions to their package versions.
package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v4"
	_ "github.com/lib/pq"
)

var pqVersion, pgxVersion = "unknown", "unknown"

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

// connectPq connects once with lib/pq.
func connectPq(ctx context.Context, target string) error {
	db, err := sql.Open("postgres", target) // only stores the string; Ping connects
	if err != nil {
		return err
	}
	defer db.Close()
	return db.PingContext(ctx)
}

// connectPgx connects once with pgx, which reads PG* variables and merges the target over them.
func connectPgx(ctx context.Context, target string) error {
	conn, err := pgx.Connect(ctx, target)
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

// attempt connects once. lib/pq panics on some PG* variables (PGSERVICE, PGHOSTADDR,
// PGREQUIRESSL, ...) while building its options, so panics become errors here.
func attempt(connect func(context.Context, string) error, req request) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(req.TimeoutMs)*time.Millisecond)
	defer cancel()
	return connect(ctx, req.Target)
}

func main() {
	connect := connectPq
	if len(os.Args) > 1 && os.Args[1] == "pgx" {
		connect = connectPgx
		emit(ready{true, "pgx", "pgx v4 " + pgxVersion})
	} else {
		emit(ready{true, "lib/pq", "lib/pq " + pqVersion})
	}
	in := bufio.NewReader(os.Stdin)
	for {
		line, readErr := in.ReadString('\n')
		if strings.TrimSpace(line) != "" {
			emit(handle(connect, line))
		}
		if readErr != nil {
			os.Exit(0) // EOF
		}
	}
}

func handle(connect func(context.Context, string) error, line string) response {
	var req request
	if err := json.Unmarshal([]byte(line), &req); err != nil {
		return response{Error: oneLine(err)}
	}
	setEnv(req.Env)
	// The attempt runs in its own goroutine so that a hung one can be abandoned.
	done := make(chan error, 1)
	go func() { done <- attempt(connect, req) }()
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
