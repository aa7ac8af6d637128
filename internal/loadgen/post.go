package loadgen

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
)

// Post sends one JSON-RPC request and returns the HTTP status, the
// Mcp-Session-Id of the response, and the answer with id (read from a JSON
// body or from the SSE stream); a non-200 status returns the body as the
// answer.
func Post(ctx context.Context, client *http.Client, url string, hdr http.Header, body, id string) (int, string, []byte, error) {
	req, _ := http.NewRequestWithContext(ctx, "POST", url, strings.NewReader(body))
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Content-Type", "application/json")
	if id != "" {
		// lets Go's transport send the request again if a kept-alive
		// connection turns out to have been closed by the server (a reload)
		// before any answer: the JSON-RPC id makes it identifiable
		req.Header.Set("Idempotency-Key", id)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	sid := resp.Header.Get("Mcp-Session-Id")
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		b, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode == http.StatusOK && id != "" {
			err = checkID(b, id)
		}
		return resp.StatusCode, sid, b, err
	}
	answer, _, err := readUntil(resp.Body, id)
	if err == nil && answer == nil {
		err = errors.New("stream ended without the answer")
	}
	return resp.StatusCode, sid, answer, err
}
