// extproc-client plays Envoy's part of the ext_proc protocol (envoy.service.ext_proc.v3), so the
// end-to-end tests can put requests to the Endpoint Picker and to body-based routing without an
// Envoy binary. It reads one JSON request per line on stdin:
//
//	{"headers": {":path": "/v1/completions", ...}, "body": "{...}", "respond": true}
//
// and for each one opens a stream, sends the request headers and the whole body (end of stream),
// or, for a request without "body" (a GET), the headers alone, ending the stream, and prints one
// JSON line with what the processor answered: the headers it set, the dynamic
// metadata it returned, and the status of an immediate response if it sent one. With "respond",
// it then plays the model server's answer (a 200 and a small JSON body), which completes the
// request in the processor's bookkeeping.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
)

type request struct {
	Headers map[string]string `json:"headers"`
	Body    *string           `json:"body"`
	Respond bool              `json:"respond"`
}

type answer struct {
	SetHeaders      map[string]string `json:"set_headers"`
	DynamicMetadata json.RawMessage   `json:"dynamic_metadata,omitempty"`
	ImmediateStatus int32             `json:"immediate_status,omitempty"`
	ImmediateBody   string            `json:"immediate_body,omitempty"`
	Error           string            `json:"error,omitempty"`
}

func headerMap(h map[string]string) *corev3.HeaderMap {
	m := &corev3.HeaderMap{}
	for k, v := range h {
		m.Headers = append(m.Headers, &corev3.HeaderValue{Key: k, RawValue: []byte(v)})
	}
	return m
}

func collect(a *answer, mutation *extprocv3.HeaderMutation) {
	for _, h := range mutation.GetSetHeaders() {
		v := h.GetHeader().GetValue()
		if raw := h.GetHeader().GetRawValue(); len(raw) > 0 {
			v = string(raw)
		}
		a.SetHeaders[h.GetHeader().GetKey()] = v
	}
}

// exchange runs one request through the processor until it has answered the request body.
func exchange(ctx context.Context, client extprocv3.ExternalProcessorClient, r request) answer {
	a := answer{SetHeaders: map[string]string{}}
	stream, err := client.Process(ctx)
	if err != nil {
		a.Error = err.Error()
		return a
	}
	send := func(p *extprocv3.ProcessingRequest) bool {
		if err := stream.Send(p); err != nil {
			a.Error = err.Error()
			return false
		}
		return true
	}
	if !send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{
		RequestHeaders: &extprocv3.HttpHeaders{Headers: headerMap(r.Headers), EndOfStream: r.Body == nil}}}) {
		return a
	}
	if r.Body != nil && !send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
		RequestBody: &extprocv3.HttpBody{Body: []byte(*r.Body), EndOfStream: true}}}) {
		return a
	}
	// Without a body, the answer to the headers is the whole answer to the request.
	bodyAnswered, headersAnswered := false, false
	for !bodyAnswered && !(r.Body == nil && headersAnswered) {
		resp, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			a.Error = err.Error()
			return a
		}
		if md := resp.GetDynamicMetadata(); md != nil {
			if js, err := protojson.Marshal(md); err == nil {
				a.DynamicMetadata = js
			}
		}
		switch v := resp.Response.(type) {
		case *extprocv3.ProcessingResponse_RequestHeaders:
			collect(&a, v.RequestHeaders.GetResponse().GetHeaderMutation())
			headersAnswered = true
		case *extprocv3.ProcessingResponse_RequestBody:
			collect(&a, v.RequestBody.GetResponse().GetHeaderMutation())
			body := v.RequestBody.GetResponse().GetBodyMutation()
			// A streamed body mutation arrives in chunks; the last one ends the stream.
			if s := body.GetStreamedResponse(); s == nil || s.GetEndOfStream() {
				bodyAnswered = true
			}
		case *extprocv3.ProcessingResponse_ImmediateResponse:
			a.ImmediateStatus = int32(v.ImmediateResponse.GetStatus().GetCode())
			a.ImmediateBody = string(v.ImmediateResponse.GetBody())
			return a
		}
	}
	if r.Respond && a.Error == "" {
		if send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{
			ResponseHeaders: &extprocv3.HttpHeaders{Headers: headerMap(map[string]string{
				":status": "200", "content-type": "application/json"})}}}) {
			send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
				ResponseBody: &extprocv3.HttpBody{Body: []byte(`{"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`), EndOfStream: true}}})
			for {
				resp, err := stream.Recv()
				if err != nil {
					break
				}
				if b, ok := resp.Response.(*extprocv3.ProcessingResponse_ResponseBody); ok {
					if s := b.ResponseBody.GetResponse().GetBodyMutation().GetStreamedResponse(); s == nil || s.GetEndOfStream() {
						break
					}
				}
			}
		}
	}
	_ = stream.CloseSend()
	return a
}

func main() {
	target := flag.String("target", "", "the processor's gRPC address, host:port")
	useTLS := flag.Bool("tls", false, "connect with TLS, not verifying the certificate (the EPP's self-signed serving)")
	timeout := flag.Duration("timeout", 30*time.Second, "deadline of each request")
	flag.Parse()
	creds := insecure.NewCredentials()
	if *useTLS {
		creds = credentials.NewTLS(&tls.Config{InsecureSkipVerify: true})
	}
	conn, err := grpc.NewClient(*target, grpc.WithTransportCredentials(creds))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer conn.Close()
	client := extprocv3.NewExternalProcessorClient(conn)
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 16<<20)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var r request
		if err := json.Unmarshal(in.Bytes(), &r); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		a := exchange(ctx, client, r)
		cancel()
		if err := out.Encode(a); err != nil {
			os.Exit(3)
		}
	}
}
