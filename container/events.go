package container

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Event is one engine event about a container or a network.
type Event struct {
	Type   string // "container" or "network"
	Action string // start, die, stop, restart, destroy (Podman: remove), connect, disconnect, ...
	// ID is the container's ID for container events; for network events it
	// is the container the network was connected to or disconnected from.
	ID string
	// Attributes carry the container's name ("name"), image and labels, or
	// for network events the network's name ("name").
	Attributes map[string]string
	TimeNano   int64
}

type eventJSON struct {
	Type   string `json:"Type"`
	Action string `json:"Action"`
	Actor  struct {
		ID         string            `json:"ID"`
		Attributes map[string]string `json:"Attributes"`
	} `json:"Actor"`
	TimeNano int64 `json:"timeNano"`
}

// EventStream is a live subscription to the engine's events. It is not safe
// for concurrent use; Close may be called from any goroutine.
type EventStream struct {
	body io.ReadCloser
	dec  *json.Decoder
}

// WatchedActions are the events the Watcher acts on. Podman's compatible
// API names Docker's destroy "remove"; either means the container is gone.
var WatchedActions = []string{"start", "restart", "die", "stop", "kill", "destroy", "remove", "pause", "unpause"}

// removed says whether action is a container's removal, on either engine.
func removed(action string) bool { return action == "destroy" || action == "remove" }

// filterAliases are the engines' own names for events they report under
// Docker's. Podman 4.3 reports its "died" as "die" but matches an event
// filter against "died", so a filter of "die" alone never sees a container
// stop; Docker ignores a name it does not know.
var filterAliases = map[string]string{"die": "died"}

// Events subscribes to the engine's container events (the given actions, all
// when none) and to network connect/disconnect events. It returns once the
// engine has accepted the subscription, so nothing that happens after it
// returns is missed.
func (c *Client) Events(ctx context.Context, actions ...string) (*EventStream, error) {
	filters := map[string][]string{"type": {"container", "network"}}
	if len(actions) > 0 {
		var names []string
		for _, a := range actions {
			names = append(names, a)
			if alias, ok := filterAliases[a]; ok {
				names = append(names, alias)
			}
		}
		filters["event"] = append(names, "connect", "disconnect")
	}
	f, err := json.Marshal(filters)
	if err != nil {
		return nil, fmt.Errorf("events: encode filters: %w", err)
	}
	resp, err := c.do(ctx, c.stream, http.MethodGet, "/events", url.Values{"filters": {string(f)}}, nil, "")
	if err != nil {
		return nil, fmt.Errorf("subscribe to engine events: %w", err)
	}
	return &EventStream{body: resp.Body, dec: json.NewDecoder(resp.Body)}, nil
}

// Next blocks until the next event. It returns an error when the stream
// ends (engine gone, context cancelled, Close).
func (s *EventStream) Next() (Event, error) {
	for {
		var j eventJSON
		if err := s.dec.Decode(&j); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return Event{}, fmt.Errorf("engine events: %w", err)
		}
		ev := Event{
			Type:       j.Type,
			Action:     j.Action,
			ID:         j.Actor.ID,
			Attributes: j.Actor.Attributes,
			TimeNano:   j.TimeNano,
		}
		if ev.Type == "network" {
			// The actor of a network event is the network; the container is
			// an attribute.
			ev.ID = j.Actor.Attributes["container"]
		}
		// Podman and newer engines may add detail after a colon
		// ("health_status: healthy"); the verb is what matters.
		if i := strings.IndexByte(ev.Action, ':'); i >= 0 {
			ev.Action = ev.Action[:i]
		}
		if ev.ID == "" {
			continue
		}
		return ev, nil
	}
}

// Close ends the subscription.
func (s *EventStream) Close() error { return s.body.Close() }
