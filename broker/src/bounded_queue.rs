//! A bounded lock-free MPMC queue whose memory follows its depth.
//!
//! A subscription's queue holds up to `subscriber_capacity` messages (about
//! a million by default, `subscriber_capacity_bytes` usually binding first),
//! but is nearly empty almost all the time. A ring buffer
//! allocated at full capacity (crossbeam's `ArrayQueue`) cost 256 KiB per
//! subscription, touched page by page as the ring went round: 1000
//! subscriptions took 700 MB. This is crossbeam's `SegQueue` (blocks of
//! 31 slots, allocated and freed as the queue grows and drains) with the
//! bound kept by a separate length counter.
//!
//! A second bound counts bytes: a count alone let one subscription of
//! 1 MiB messages hold 8 GiB (issue 23, finding 3). Whichever bound is
//! reached first makes the queue full, but an empty queue always takes one
//! item, so a message larger than the byte bound is still delivered.
//!
//! Deep queues also answer to the broker's memory budget: the bytes bound
//! holds one queue, but a connection with thousands of subscriptions to one
//! topic, none of them read, multiplies it (each holds its own slot for
//! every shared message). Past [`FREE_SLOTS`] items, a queue charges each
//! slot to the budget, and takes no more while the budget is full. The
//! first slots are free so that a broker of a hundred thousand
//! subscriptions, each with a message or two in flight, never counts as
//! full; a queue of that depth is a consumer that fell behind.

use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_queue::SegQueue;

use crate::memory::MemoryBudget;

/// Items a queue holds before it charges their slots to the memory budget.
pub const FREE_SLOTS: usize = 1024;

/// What an item costs against the queue's byte bound.
pub trait Weigh {
    fn weight(&self) -> usize;
}

pub struct BoundedQueue<T> {
    items: SegQueue<T>,
    /// Slots taken: reserved before a push, released after a pop, so it
    /// never exceeds `capacity` and may briefly run ahead of `items`.
    len: AtomicUsize,
    capacity: usize,
    /// Weight of the items held (reserved with the slot, like `len`).
    bytes: AtomicUsize,
    max_bytes: usize,
    /// Charged for every slot past [`FREE_SLOTS`], when set.
    budget: Option<&'static MemoryBudget>,
}

/// What one item's slot costs the budget: the item and the slot's state.
const fn slot_bytes<T>() -> usize {
    std::mem::size_of::<T>() + std::mem::size_of::<usize>()
}

/// Slots past [`FREE_SLOTS`] among `len`: what a queue of that length owes
/// the budget for.
fn charged_slots(len: usize) -> usize {
    len.saturating_sub(FREE_SLOTS)
}

impl<T: Weigh> BoundedQueue<T> {
    pub fn new(capacity: usize, max_bytes: usize) -> BoundedQueue<T> {
        assert!(capacity > 0, "a queue needs room for one item");
        BoundedQueue {
            items: SegQueue::new(),
            len: AtomicUsize::new(0),
            capacity,
            bytes: AtomicUsize::new(0),
            max_bytes,
            budget: None,
        }
    }

    /// Charge the slots of a deep queue to `budget` (see the module notes).
    pub fn with_budget(mut self, budget: &'static MemoryBudget) -> BoundedQueue<T> {
        self.budget = Some(budget);
        self
    }

    /// The length went from `before` down by `count`: give back what the
    /// slots it left past [`FREE_SLOTS`] were charged. Every change of the
    /// length is one atomic step, charged or given back by where it starts
    /// and ends, so the budget holds exactly `charged_slots(len)` slots
    /// whatever the interleaving.
    fn released(&self, before: usize, count: usize) {
        if let Some(budget) = self.budget {
            let slots = charged_slots(before) - charged_slots(before - count);
            if slots > 0 {
                budget.sub(slots * slot_bytes::<T>());
            }
        }
    }

    /// Take a slot and `weight` bytes if both are free (the bytes always
    /// are in an empty queue).
    fn reserve(&self, weight: usize) -> bool {
        let mut len = self.len.load(Ordering::Relaxed);
        loop {
            if len >= self.capacity {
                return false;
            }
            // A deep queue needs room in the budget for one more slot (as
            // approximate as the budget itself: racing pushes may overshoot
            // it by a slot each).
            if let Some(budget) = self.budget {
                if len >= FREE_SLOTS && budget.used() + slot_bytes::<T>() > budget.limit() {
                    return false;
                }
            }
            match self
                .len
                .compare_exchange_weak(len, len + 1, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => len = now,
            }
        }
        if let (Some(budget), true) = (self.budget, len >= FREE_SLOTS) {
            budget.add(slot_bytes::<T>());
        }
        let before = self.bytes.fetch_add(weight, Ordering::AcqRel);
        if before > 0 && before + weight > self.max_bytes {
            self.bytes.fetch_sub(weight, Ordering::AcqRel);
            let before = self.len.fetch_sub(1, Ordering::AcqRel);
            self.released(before, 1);
            return false;
        }
        true
    }

    /// Append `item`, or hand it back when the queue is full.
    pub fn push(&self, item: T) -> Result<(), T> {
        if !self.reserve(item.weight()) {
            return Err(item);
        }
        self.items.push(item);
        Ok(())
    }

    /// Append `item`, dropping the oldest items to make room, each handed
    /// to `evicted` (more than one when the new item is heavier than the
    /// oldest, or when other pushes race).
    pub fn force_push(&self, item: T, mut evicted: impl FnMut(T)) {
        let weight = item.weight();
        while !self.reserve(weight) {
            if let Some(oldest) = self.pop() {
                evicted(oldest);
            }
        }
        self.items.push(item);
    }

    /// The oldest item. `None` when empty, and also, for an instant, while
    /// a push that has reserved its slot has not stored its item yet (that
    /// pusher wakes the consumer afterwards).
    pub fn pop(&self) -> Option<T> {
        let item = self.items.pop()?;
        self.bytes.fetch_sub(item.weight(), Ordering::AcqRel);
        let before = self.len.fetch_sub(1, Ordering::AcqRel);
        self.released(before, 1);
        Some(item)
    }

    /// Take up to `max` of the oldest items, oldest first, handing each to
    /// `take`, which returns `false` to stop after the one it was given.
    /// Returns how many were taken. The slots are released together at the
    /// end: the length counter is the one line the producers and the
    /// consumer both write, and releasing per item bounced it between their
    /// cores once per message.
    pub fn pop_some(&self, max: usize, mut take: impl FnMut(T) -> bool) -> usize {
        let (mut taken, mut weight) = (0, 0);
        while taken < max {
            let Some(item) = self.items.pop() else {
                break;
            };
            taken += 1;
            weight += item.weight();
            if !take(item) {
                break;
            }
        }
        if taken > 0 {
            self.bytes.fetch_sub(weight, Ordering::AcqRel);
            let before = self.len.fetch_sub(taken, Ordering::AcqRel);
            self.released(before, taken);
        }
        taken
    }

    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes held (see [`Weigh`]).
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }

    /// No room for one more item of the smallest kind: every slot or
    /// every byte is taken.
    pub fn is_full(&self) -> bool {
        self.len() >= self.capacity || self.bytes() >= self.max_bytes
    }
}

impl<T> Drop for BoundedQueue<T> {
    /// The items still queued go with the queue, and their charge with them.
    fn drop(&mut self) {
        if let Some(budget) = self.budget {
            budget.sub(charged_slots(*self.len.get_mut()) * slot_bytes::<T>());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Test items weigh what they say.
    impl Weigh for u64 {
        fn weight(&self) -> usize {
            *self as usize
        }
    }

    fn counted(capacity: usize) -> BoundedQueue<u64> {
        BoundedQueue::new(capacity, usize::MAX)
    }

    #[test]
    fn bytes_bound_the_queue_too_but_an_empty_queue_takes_any_item() {
        let queue = BoundedQueue::new(100, 10);
        queue.push(4u64).unwrap();
        queue.push(6).unwrap();
        assert!(queue.is_full(), "10 of 10 bytes");
        assert_eq!(queue.push(1), Err(1));
        assert_eq!(queue.pop(), Some(4));
        assert_eq!(queue.bytes(), 6);
        assert_eq!(queue.push(5), Err(5), "6 + 5 > 10");
        queue.push(4).unwrap();
        // drop_oldest makes room by bytes: 9 needs both 6 and 4 to go.
        let mut evicted = Vec::new();
        queue.force_push(9, |item| evicted.push(item));
        assert_eq!(evicted, [6, 4]);
        assert_eq!(queue.bytes(), 9);
        assert_eq!(queue.pop_some(8, |_| true), 1);
        assert_eq!(queue.bytes(), 0);
        queue
            .push(50)
            .expect("an empty queue takes an item over the bound");
        assert_eq!(queue.push(1), Err(1));
    }

    #[test]
    fn it_keeps_order_and_its_bound() {
        let queue = counted(3);
        for i in 0..3 {
            queue.push(i).unwrap();
        }
        assert!(queue.is_full());
        assert_eq!(queue.push(9), Err(9));
        assert_eq!(queue.pop(), Some(0));
        queue.push(3).unwrap();
        assert_eq!(queue.len(), 3);
        assert_eq!(
            std::iter::from_fn(|| queue.pop()).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(queue.len(), 0);
        assert_eq!(queue.pop(), None);
    }

    #[test]
    fn pop_some_takes_in_order_up_to_max_or_until_told_to_stop() {
        let queue = counted(8);
        for i in 0..6 {
            queue.push(i).unwrap();
        }
        let mut got = Vec::new();
        assert_eq!(
            queue.pop_some(4, |i| {
                got.push(i);
                true
            }),
            4
        );
        assert_eq!(got, [0, 1, 2, 3]);
        assert_eq!(queue.len(), 2, "the slots are free again");
        assert_eq!(
            queue.pop_some(4, |i| {
                got.push(i);
                false
            }),
            1,
            "stopped after one"
        );
        assert_eq!(
            queue.pop_some(4, |i| {
                got.push(i);
                true
            }),
            1,
            "only one left"
        );
        assert_eq!(got, [0, 1, 2, 3, 4, 5]);
        assert_eq!(queue.pop_some(4, |_| true), 0);
        assert_eq!(queue.len(), 0);
        for i in 0..8 {
            queue.push(i).unwrap();
        }
        assert!(queue.is_full());
    }

    #[test]
    fn a_deep_queue_charges_its_slots_to_the_budget_and_stops_at_a_full_one() {
        let slot = slot_bytes::<u64>();
        let budget = MemoryBudget::leak(10 * slot);
        let queue = counted(100_000).with_budget(budget);
        for i in 0..FREE_SLOTS {
            queue.push(i as u64).unwrap();
        }
        assert_eq!(budget.used(), 0, "the first slots are free");
        for i in 0..10 {
            queue.push(i).unwrap();
        }
        assert_eq!(budget.used(), 10 * slot);
        assert_eq!(queue.push(0), Err(0), "no room left in the budget");
        assert_eq!(queue.len(), FREE_SLOTS + 10);
        // Popping gives the charge back, one slot or a batch at a time.
        queue.pop().unwrap();
        assert_eq!(budget.used(), 9 * slot);
        queue.pop_some(5, |_| true);
        assert_eq!(budget.used(), 4 * slot);
        queue.push(7).unwrap();
        queue.force_push(8, |_| {});
        assert_eq!(budget.used(), 6 * slot);
        // A queue dropped with items in it gives back what they held.
        drop(queue);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn racing_pushes_and_pops_leave_the_budget_exact() {
        let budget = MemoryBudget::leak(usize::MAX);
        let queue = Arc::new(counted(FREE_SLOTS * 4).with_budget(budget));
        let producers: Vec<_> = (0..2)
            .map(|_| {
                let queue = queue.clone();
                std::thread::spawn(move || {
                    for i in 0..50_000u64 {
                        let _ = queue.push(i);
                    }
                })
            })
            .collect();
        for _ in 0..20_000 {
            queue.pop_some(7, |_| true);
        }
        for producer in producers {
            producer.join().unwrap();
        }
        let expected = charged_slots(queue.len()) * slot_bytes::<u64>();
        assert_eq!(budget.used(), expected);
        while queue.pop().is_some() {}
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn force_push_drops_the_oldest() {
        let queue = counted(2);
        let mut evicted = Vec::new();
        for item in 1..=4 {
            queue.force_push(item, |oldest| evicted.push(oldest));
        }
        assert_eq!(evicted, [1, 2]);
        assert_eq!(
            std::iter::from_fn(|| queue.pop()).collect::<Vec<_>>(),
            [3, 4]
        );
    }

    #[test]
    fn racing_producers_and_a_consumer_lose_nothing_and_never_overfill() {
        let queue = Arc::new(counted(64));
        let producers: Vec<_> = (0..4u64)
            .map(|p| {
                let queue = queue.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000u64 {
                        let mut item = p * 1_000_000 + i;
                        while let Err(back) = queue.push(item) {
                            item = back;
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        let mut last = [None::<u64>; 4];
        let mut seen = 0;
        while seen < 80_000 {
            assert!(queue.len() <= 64);
            if let Some(item) = queue.pop() {
                let (p, i) = ((item / 1_000_000) as usize, item % 1_000_000);
                // Each producer's items arrive in its order.
                assert!(last[p].is_none_or(|l| l < i), "{p}: {last:?} then {i}");
                last[p] = Some(i);
                seen += 1;
            }
        }
        for producer in producers {
            producer.join().unwrap();
        }
        assert_eq!(queue.len(), 0);
    }
}
