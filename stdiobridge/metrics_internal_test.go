package stdiobridge

import (
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// The error_type label takes the code of the child's error, which the
// server (or whatever it relays) chooses: 1000 distinct codes make at most
// the known codes and "other", never a label value each.
func TestErrorTypeLabelBounded(t *testing.T) {
	initBridgeMetrics(prometheus.NewRegistry())
	h := &Handler{table: &table{}, cmdLabel: "error_type_bounded"}
	h.table.tools.max = 10
	started := time.Now()
	for code := 1; code <= 1000; code++ {
		h.observe("tools/call", "echo", "2025-11-25", code, false, started)
	}
	h.observe("tools/call", "echo", "2025-11-25", -32601, false, started)
	h.observe("tools/call", "echo", "2025-11-25", -32099, false, started)
	h.observe("tools/call", "echo", "2025-11-25", 0, true, started)
	ch := make(chan prometheus.Metric, 4096)
	go func() { bridgeMetrics.operations.Collect(ch); close(ch) }()
	got := map[string]uint64{}
	for m := range ch {
		var pb dto.Metric
		if err := m.Write(&pb); err != nil {
			t.Fatal(err)
		}
		labels := map[string]string{}
		for _, l := range pb.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["route"] == "error_type_bounded" {
			got[labels["error_type"]] += pb.GetHistogram().GetSampleCount()
		}
	}
	want := map[string]uint64{"other": 1001, "-32601": 1, "tool_error": 1}
	keys := func(m map[string]uint64) []string {
		var out []string
		for k, v := range m {
			out = append(out, k+"="+strconv.FormatUint(v, 10))
		}
		slices.Sort(out)
		return out
	}
	if !slices.Equal(keys(got), keys(want)) {
		g := keys(got)
		if len(g) > 10 {
			g = append(g[:10], "… "+strconv.Itoa(len(got)-10)+" more")
		}
		t.Fatalf("error_type values: %v, want %v", g, keys(want))
	}
}
