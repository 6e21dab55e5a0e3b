package auth

// HoldSlot takes one of h's concurrency slots without hashing and returns a
// function that gives it back. It lets tests fill the semaphore
// deterministically.
func (h *Hasher) HoldSlot() (release func()) {
	h.sem <- struct{}{}
	return h.release
}

// Slots returns the capacity of h's semaphore and the number of slots in use.
func (h *Hasher) Slots() (capacity, inUse int) {
	return cap(h.sem), len(h.sem)
}

// OnQueued makes h call f each time an operation starts waiting for a slot. Set it before h is
// used concurrently.
func (h *Hasher) OnQueued(f func()) { h.onQueued = f }

// OnDerive makes h call f with the parameters of each derivation it runs. Set it before h is used
// concurrently.
func (h *Hasher) OnDerive(f func(Params)) { h.onDerive = f }
