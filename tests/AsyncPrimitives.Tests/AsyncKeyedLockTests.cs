using System.Runtime.CompilerServices;
using AsyncPrimitives.Internal;
using AsyncPrimitives.Tests.Support;

namespace AsyncPrimitives.Tests;

/// <summary>
/// AsyncKeyedLock: the lock contract (<see cref="LockContractTests{TGate, TReleaser}"/>) run on one key of a keyed
/// lock, plus what only a lock per key has: keys that do not wait for each other, a key that exists only while held
/// or awaited (no leak after a million keys), a semaphore per key, stale releasers, and races across many keys.
/// </summary>
public sealed class AsyncKeyedLockTests : LockContractTests<AsyncKeyedLockTests.KeyedGate, AsyncKeyedLock<string>.Releaser>
{
    protected override KeyedGate Create(TimeProvider? timeProvider = null) => new(new AsyncKeyedLock<string>(timeProvider: timeProvider), "k");

    protected override ValueTask<AsyncKeyedLock<string>.Releaser> AcquireAsync(KeyedGate gate, CancellationToken cancellationToken = default) =>
        gate.Keyed.AcquireAsync(gate.Key, cancellationToken);

    protected override ValueTask<AsyncKeyedLock<string>.Releaser> AcquireAsync(KeyedGate gate, TimeSpan timeout, CancellationToken cancellationToken = default) =>
        gate.Keyed.AcquireAsync(gate.Key, timeout, cancellationToken);

    protected override bool TryAcquire(KeyedGate gate) => gate.Keyed.TryAcquire(gate.Key, out _);

    protected override void Release(KeyedGate gate) => gate.Keyed.Release(gate.Key);

    protected override bool IsHeld(KeyedGate gate) => gate.Keyed.IsHeld(gate.Key);

    private protected override WaitLines Lines(KeyedGate gate) => gate.Keyed.Lines(gate.Key);

    // ---- arguments ----

    [Theory]
    [InlineData(0)]
    [InlineData(-1)]
    [InlineData(int.MinValue)]
    public void Constructor_NonPositiveMaxCountPerKey_ThrowsArgumentOutOfRangeWithTheParameterName(int maxCountPerKey)
    {
        FluentActions.Invoking(() => new AsyncKeyedLock<string>(maxCountPerKey))
            .Should().Throw<ArgumentOutOfRangeException>().WithParameterName("maxCountPerKey");
    }

    [Fact]
    public void EveryMember_NullKey_ThrowsArgumentNullWithTheParameterName()
    {
        var keyed = new AsyncKeyedLock<string>();
        string key = null!;

        FluentActions.Invoking(() => keyed.AcquireAsync(key)).Should().Throw<ArgumentNullException>().WithParameterName("key");
        FluentActions.Invoking(() => keyed.AcquireAsync(key, TimeSpan.FromSeconds(1))).Should().Throw<ArgumentNullException>().WithParameterName("key");
        FluentActions.Invoking(() => keyed.AcquireAsync(key, new CancellationToken(true))).Should().Throw<ArgumentNullException>().WithParameterName("key");
        FluentActions.Invoking(() => keyed.TryAcquire(key, out _)).Should().Throw<ArgumentNullException>().WithParameterName("key");
        FluentActions.Invoking(() => keyed.IsHeld(key)).Should().Throw<ArgumentNullException>().WithParameterName("key");
        keyed.KeyCount.Should().Be(0);
    }

    [Fact]
    public void EveryMember_NullKeyOfANullableValueType_ThrowsArgumentNullWithTheParameterName()
    {
#pragma warning disable CS8714 // int? breaks TKey : notnull only as a warning, so a caller can still get here
        var keyed = new AsyncKeyedLock<int?>();
        int? key = null;
        FluentActions.Invoking(() => keyed.AcquireAsync(key)).Should().Throw<ArgumentNullException>().WithParameterName("key");
        FluentActions.Invoking(() => keyed.TryAcquire(key, out _)).Should().Throw<ArgumentNullException>().WithParameterName("key");
        FluentActions.Invoking(() => keyed.IsHeld(key)).Should().Throw<ArgumentNullException>().WithParameterName("key");
        keyed.TryAcquire(0, out AsyncKeyedLock<int?>.Releaser zero).Should().BeTrue("0, whose hash a null key shares, is an ordinary key");
#pragma warning restore CS8714
        zero.Dispose();
    }

    [Fact]
    public void AcquireAsync_NullKeyAndInvalidTimeout_ReportsTheNullKeyFirst()
    {
        var keyed = new AsyncKeyedLock<string>();
        FluentActions.Invoking(() => keyed.AcquireAsync(null!, TimeSpan.FromMilliseconds(-2)))
            .Should().Throw<ArgumentNullException>().WithParameterName("key");
    }

    // ---- keys ----

    [Fact]
    public async Task AcquireAsync_DifferentKeys_NeverWaitForEachOther()
    {
        var keyed = new AsyncKeyedLock<int>();
        var held = new List<AsyncKeyedLock<int>.Releaser>();
        for (int key = 0; key < 100; key++)
        {
            ValueTask<AsyncKeyedLock<int>.Releaser> acquire = keyed.AcquireAsync(key);
            acquire.IsCompletedSuccessfully.Should().BeTrue($"key {key} is free even though 0..{key - 1} are held");
            held.Add(await acquire);
        }

        keyed.KeyCount.Should().Be(100);
        keyed.TryAcquire(42, out _).Should().BeFalse();
        held.ForEach(r => r.Dispose());
        keyed.KeyCount.Should().Be(0);
        keyed.IsHeld(42).Should().BeFalse();
    }

    [Fact]
    public async Task KeyCount_CountsKeysWithAHolderOrAWaiter_AndIsZeroOnceAllAreReleased()
    {
        var time = new FakeTimeProvider();
        var keyed = new AsyncKeyedLock<string>(timeProvider: time);
        keyed.KeyCount.Should().Be(0);

        AsyncKeyedLock<string>.Releaser a = await keyed.AcquireAsync("a");
        AsyncKeyedLock<string>.Releaser b = await keyed.AcquireAsync("b");
        using var cts = new CancellationTokenSource();
        ValueTask<AsyncKeyedLock<string>.Releaser> cancelled = keyed.AcquireAsync("a", cts.Token);
        ValueTask<AsyncKeyedLock<string>.Releaser> timedOut = keyed.AcquireAsync("b", TimeSpan.FromSeconds(1));
        ValueTask<AsyncKeyedLock<string>.Releaser> waiting = keyed.AcquireAsync("a");
        keyed.KeyCount.Should().Be(2, "waiters wait for keys that are already held");
        keyed.ToString().Should().Be("AsyncKeyedLock(keys=2, maxCountPerKey=1)");

        cts.Cancel();
        time.Advance(TimeSpan.FromSeconds(1));
        await FluentActions.Awaiting(() => cancelled.AsTask()).Should().ThrowAsync<OperationCanceledException>();
        await FluentActions.Awaiting(() => timedOut.AsTask()).Should().ThrowAsync<TimeoutException>();
        keyed.KeyCount.Should().Be(2, "the holders keep their keys");

        b.Dispose();
        keyed.KeyCount.Should().Be(1);
        a.Dispose();
        keyed.KeyCount.Should().Be(1, "`a` went to its waiter");
        (await Within(waiting)).Dispose();
        keyed.KeyCount.Should().Be(0);
        keyed.ToString().Should().Be("AsyncKeyedLock(keys=0, maxCountPerKey=1)");
    }

    [Fact]
    public void TryAcquire_OnAKeyNobodyHolds_TakesIt_AndAZeroTimeoutOnAHeldKeyTimesOutWithoutQueueing()
    {
        var keyed = new AsyncKeyedLock<string>();
        keyed.TryAcquire("x", out AsyncKeyedLock<string>.Releaser held).Should().BeTrue();
        keyed.TryAcquire("x", out _).Should().BeFalse();

        ValueTask<AsyncKeyedLock<string>.Releaser> zero = keyed.AcquireAsync("x", TimeSpan.Zero);

        zero.IsFaulted.Should().BeTrue();
        zero.AsTask().Exception!.InnerException.Should().BeOfType<TimeoutException>();
        keyed.Lines("x").Waiting.Should().Be(0);
        held.Dispose();
        keyed.KeyCount.Should().Be(0);
    }

    [Fact]
    public void AcquireAsync_PreCancelledToken_OnANewKey_CreatesNothing()
    {
        var keyed = new AsyncKeyedLock<string>();
        ValueTask<AsyncKeyedLock<string>.Releaser> acquire = keyed.AcquireAsync("new", new CancellationToken(true));

        acquire.IsCanceled.Should().BeTrue();
        keyed.KeyCount.Should().Be(0);
    }

    [Fact]
    public async Task Comparer_DecidesWhichKeysAreTheSame()
    {
        var keyed = new AsyncKeyedLock<string>(comparer: StringComparer.OrdinalIgnoreCase);
        using (await keyed.AcquireAsync("Alice"))
        {
            keyed.IsHeld("ALICE").Should().BeTrue();
            keyed.TryAcquire("alice", out _).Should().BeFalse();
            keyed.TryAcquire("Bob", out AsyncKeyedLock<string>.Releaser bob).Should().BeTrue();
            bob.Dispose();
        }

        keyed.KeyCount.Should().Be(0);
    }

    [Fact]
    public async Task KeysWithCollidingHashes_AreStillDistinct()
    {
        var keyed = new AsyncKeyedLock<int>(comparer: new ConstantHashComparer());
        var held = new List<AsyncKeyedLock<int>.Releaser>();
        for (int key = 0; key < 50; key++)
        {
            held.Add(await keyed.AcquireAsync(key));
        }

        keyed.KeyCount.Should().Be(50);
        keyed.IsHeld(49).Should().BeTrue();
        keyed.IsHeld(50).Should().BeFalse();

        // Release from the middle of the one chain, then the rest.
        for (int i = 0; i < 50; i += 2)
        {
            held[i].Dispose();
        }

        keyed.KeyCount.Should().Be(25);
        keyed.IsHeld(10).Should().BeFalse();
        keyed.IsHeld(11).Should().BeTrue();
        for (int i = 1; i < 50; i += 2)
        {
            held[i].Dispose();
        }

        keyed.KeyCount.Should().Be(0);
    }

    [Fact]
    public void DistinctKeysWithEqualHashCodes_UnderTheDefaultComparer_AreStillDistinct()
    {
        var keyed = new AsyncKeyedLock<CollidingKey>();
        keyed.TryAcquire(new CollidingKey(1), out AsyncKeyedLock<CollidingKey>.Releaser one).Should().BeTrue();

        keyed.IsHeld(new CollidingKey(1)).Should().BeTrue();
        keyed.IsHeld(new CollidingKey(2)).Should().BeFalse("an equal hash code does not make keys equal");
        keyed.TryAcquire(new CollidingKey(1), out _).Should().BeFalse();
        keyed.TryAcquire(new CollidingKey(2), out AsyncKeyedLock<CollidingKey>.Releaser two).Should().BeTrue();
        keyed.KeyCount.Should().Be(2);

        one.Dispose();
        keyed.IsHeld(new CollidingKey(1)).Should().BeFalse();
        keyed.IsHeld(new CollidingKey(2)).Should().BeTrue();
        two.Dispose();
        keyed.KeyCount.Should().Be(0);
    }

    [Theory]
    [InlineData(1, 2)]
    [InlineData(2, 2)]
    [InlineData(3, 4)]
    [InlineData(8, 8)]
    [InlineData(12, 16)]
    [InlineData(64, 64)]
    [InlineData(65, 64)]
    [InlineData(1024, 64)]
    public void StripeCount_IsThePowerOfTwoAtOrAboveTheProcessorCount_FromTwoToSixtyFour(int processors, int stripes)
    {
        AsyncKeyedLock<int>.StripeCountFor(processors).Should().Be(stripes);
        new AsyncKeyedLock<int>().StripeCount.Should().Be(AsyncKeyedLock<int>.StripeCountFor(Environment.ProcessorCount));
    }

    /// <summary>Keys whose hash codes differ only in their high bits (multiples of 2^24, of 2^17, of 1024) spread over
    /// the stripes (the low bits of the mixed hash) and over the buckets of each (the bits above them), rather than
    /// sharing one stripe and a few buckets.</summary>
    [Theory]
    [InlineData(24)]
    [InlineData(17)]
    [InlineData(10)]
    public void KeysWhoseHashesDifferOnlyInHighBits_SpreadOverStripesAndBuckets(int shift)
    {
        const int Keys = 256;
        var stripes = new HashSet<uint>();
        var buckets = new HashSet<uint>();
        for (int i = 0; i < Keys; i++)
        {
            uint mixed = AsyncKeyedLock<int>.Mix(i << shift);
            stripes.Add(mixed & 63); // 64 stripes at most
            buckets.Add((mixed >> 6) & 255); // the next 8 bits: a bucket of a table of 256
        }

        stripes.Count.Should().BeGreaterThan(48, "256 keys fill most of 64 stripes");
        buckets.Count.Should().BeGreaterThan(128, "256 keys fill most of 256 buckets");
    }

    [Fact]
    public void ToString_WithAName_ShowsItFirst()
    {
        var keyed = new AsyncKeyedLock<string>(maxCountPerKey: 2) { Name = "per-account" };
        keyed.TryAcquire("a", out _).Should().BeTrue();

        keyed.Name.Should().Be("per-account");
        keyed.ToString().Should().Be("AsyncKeyedLock(name=\"per-account\", keys=1, maxCountPerKey=2)");
        new AsyncKeyedLock<int>().Name.Should().BeNull();
    }

    // ---- a semaphore per key ----

    [Fact]
    public async Task MaxCountPerKey_LetsThatManyHoldAKey_AndTheNextWaitInFifoOrder()
    {
        var keyed = new AsyncKeyedLock<string>(maxCountPerKey: 3);
        var holders = new List<AsyncKeyedLock<string>.Releaser>();
        for (int i = 0; i < 3; i++)
        {
            keyed.TryAcquire("k", out AsyncKeyedLock<string>.Releaser r).Should().BeTrue();
            holders.Add(r);
        }

        keyed.TryAcquire("k", out _).Should().BeFalse();
        ValueTask<AsyncKeyedLock<string>.Releaser>[] waiters = Enumerable.Range(0, 3).Select(_ => keyed.AcquireAsync("k")).ToArray();
        waiters.Should().OnlyContain(w => !w.IsCompleted);
        keyed.MaxCountPerKey.Should().Be(3);

        holders[1].Dispose();
        waiters[0].IsCompletedSuccessfully.Should().BeTrue();
        waiters[1].IsCompleted.Should().BeFalse();
        holders[0].Dispose();
        holders[2].Dispose();
        waiters.Should().OnlyContain(w => w.IsCompletedSuccessfully);
        keyed.TryAcquire("k", out _).Should().BeFalse("the three waiters hold it now");

        foreach (ValueTask<AsyncKeyedLock<string>.Releaser> waiter in waiters)
        {
            (await waiter).Dispose();
        }

        keyed.KeyCount.Should().Be(0);
    }

    // ---- releasers ----

    [Fact]
    public async Task Releaser_DisposedTwice_AfterTheKeyWasRemoved_ThrowsAndReleasesNoLaterHolder()
    {
        var keyed = new AsyncKeyedLock<string>();
        AsyncKeyedLock<string>.Releaser first = await keyed.AcquireAsync("k");
        first.Dispose();

        // The key's entry is reused, for this key and for another one.
        AsyncKeyedLock<string>.Releaser again = await keyed.AcquireAsync("k");
        AsyncKeyedLock<string>.Releaser other = await keyed.AcquireAsync("other");

        FluentActions.Invoking(first.Dispose).Should().Throw<SynchronizationLockException>();
        keyed.IsHeld("k").Should().BeTrue();
        keyed.IsHeld("other").Should().BeTrue();
        again.Dispose();
        other.Dispose();
        keyed.KeyCount.Should().Be(0);
    }

    [Fact]
    public void Release_OfAKeyNobodyHolds_ThrowsSynchronizationLockException()
    {
        var keyed = new AsyncKeyedLock<string>();
        FluentActions.Invoking(() => keyed.Release("nobody")).Should().Throw<SynchronizationLockException>();
    }

    // ---- no leak ----

    [Fact]
    public void AMillionDistinctKeys_AcquiredAndReleasedOneAtATime_LeaveNoKeyAndAllocateNothingOnceWarm()
    {
        var keyed = new AsyncKeyedLock<int>();
        CycleKeys(keyed, 0, 1000); // warm up: JIT, the stripes' entry pools

        long before = GC.GetAllocatedBytesForCurrentThread();
        CycleKeys(keyed, 1000, 1_000_000);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        keyed.KeyCount.Should().Be(0);
        allocated.Should().Be(0, "a released key's entry is reused for the next key");
    }

    [Fact]
    public void AMillionDistinctKeys_HeldTenThousandAtATime_LeaveNoKeyAndNoTableBehind()
    {
        var keyed = new AsyncKeyedLock<long>();
        int bound = keyed.StripeCount * (AsyncKeyedLock<long>.MinBuckets + AsyncKeyedLock<long>.EntryPoolCapacity);
        var held = new AsyncKeyedLock<long>.Releaser[10_000];
        int peak = 0;

        for (long burst = 0; burst < 100; burst++)
        {
            for (int i = 0; i < held.Length; i++)
            {
                keyed.TryAcquire(burst * held.Length + i, out held[i]).Should().BeTrue();
            }

            keyed.KeyCount.Should().Be(held.Length);
            peak = Math.Max(peak, keyed.RetainedSlots);
            foreach (AsyncKeyedLock<long>.Releaser releaser in held)
            {
                releaser.Dispose();
            }

            keyed.KeyCount.Should().Be(0);
            keyed.RetainedSlots.Should().BeLessThanOrEqualTo(bound, "the tables shrink back and only a few entries are kept for reuse");
        }

        peak.Should().BeGreaterThanOrEqualTo(held.Length, "the tables did grow for 10,000 keys held at once");
    }

    [Fact]
    public void ABurstOfKeys_ReleasedOneByOne_ShrinksTheTablesWithTheKeys_AndHeldAgainTheKeysStillExcludeOnlyThemselves()
    {
        const int Keys = 4096;
        var keyed = new AsyncKeyedLock<int>();
        int minimum = keyed.StripeCount * (AsyncKeyedLock<int>.MinBuckets + AsyncKeyedLock<int>.EntryPoolCapacity);
        var held = new AsyncKeyedLock<int>.Releaser[Keys];
        keyed.RetainedSlots.Should().Be(keyed.StripeCount * AsyncKeyedLock<int>.MinBuckets, "a new lock keeps its smallest tables and no entry");

        for (int round = 0; round < 2; round++)
        {
            for (int key = 0; key < Keys; key++)
            {
                if (!keyed.TryAcquire(key, out held[key]))
                {
                    throw new InvalidOperationException($"round {round}: key {key} was not free");
                }
            }

            // Each key excludes itself, and only itself.
            Enumerable.Range(0, Keys).Count(key => keyed.TryAcquire(key, out _)).Should().Be(0);
            keyed.TryAcquire(Keys, out AsyncKeyedLock<int>.Releaser other).Should().BeTrue();
            other.Dispose();
            keyed.KeyCount.Should().Be(Keys);

            var tables = new List<(int Remaining, int Retained)>();
            for (int key = 0; key < Keys; key++)
            {
                held[key].Dispose();
                int remaining = Keys - key - 1;
                if (remaining % 128 == 0)
                {
                    tables.Add((remaining, keyed.RetainedSlots));
                }
            }

            // A table grows at one key per bucket and halves at a quarter full: never fewer buckets than keys, never
            // more than about four per key (plus the smallest tables and the entries kept for reuse).
            tables.Should().OnlyContain(t => t.Retained >= t.Remaining && t.Retained <= (4 * t.Remaining) + (2 * minimum), $"round {round}");
            keyed.KeyCount.Should().Be(0);
            keyed.RetainedSlots.Should().Be(minimum, "every table is back to its smallest size, and each stripe keeps a full pool of entries, no more");
        }
    }

    [Fact]
    public async Task AReleasedKey_IsNotKeptAlive_EvenAfterItsWaitersTimedOutOrWereCancelled()
    {
        var keyed = new AsyncKeyedLock<object>();
        WeakReference key = await UseAndDropKeyAsync(keyed);

        // A pool thread may still be finishing the waiters' continuations (its stack can hold the key a moment longer,
        // on a loaded machine): collect until the key is gone, within the bound.
        var bound = System.Diagnostics.Stopwatch.StartNew();
        do
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
            await Task.Yield();
        }
        while (key.IsAlive && bound.Elapsed < TimeSpan.FromSeconds(10));

        key.IsAlive.Should().BeFalse("the keyed lock keeps no reference to a key nobody holds or waits for");
        keyed.KeyCount.Should().Be(0);
    }

    // ---- races: nothing lost, across many keys ----

    [Fact]
    public async Task ManyKeys_CancellationRacingReleaseOnTheSameKey_KeyIsKeptOrPassedOnAndThenRemoved()
    {
        int kept = 0, passedOn = 0;
        await StepLoop.RunAsync(async step =>
        {
            var keyed = new AsyncKeyedLock<int>();
            var random = new Random(77);
            using var racer = new Racer();
            for (int i = 0; i < 2000; i++)
            {
                step();
                int key = i % 37;
                keyed.TryAcquire(key, out AsyncKeyedLock<int>.Releaser holder).Should().BeTrue();
                using var cts = new CancellationTokenSource();
                ValueTask<AsyncKeyedLock<int>.Releaser> b = keyed.AcquireAsync(key, cts.Token);

                racer.Race(holder.Dispose, cts.Cancel, random);

                if (b.IsCompletedSuccessfully)
                {
                    kept++;
                    keyed.IsHeld(key).Should().BeTrue();
                    (await b).Dispose();
                }
                else
                {
                    passedOn++;
                    await FluentActions.Awaiting(() => b.AsTask()).Should().ThrowAsync<OperationCanceledException>();
                }

                keyed.KeyCount.Should().Be(0, "with nobody left holding or waiting, the key is gone");
            }
        });

        (kept + passedOn).Should().Be(2000);
    }

    [Fact]
    public async Task ManyTasksOnManyKeys_WithRandomCancellationsAndTimeouts_KeepPerKeyLimitsAndLoseNothing()
    {
        const int Workers = 8;
        const int Attempts = 2000;
        const int Keys = 5;
        const int PerKey = 2;
        var keyed = new AsyncKeyedLock<int>(PerKey);
        int[] inside = new int[Keys];
        int overlaps = 0, acquired = 0, cancelled = 0, timedOut = 0, refused = 0;

        await StepLoop.RunAsync(step => Task.WhenAll(Enumerable.Range(0, Workers).Select(w => Task.Run(async () =>
        {
            var random = new Random(w);
            for (int i = 0; i < Attempts; i++)
            {
                step();
                int key = random.Next(Keys);
                using var cts = new CancellationTokenSource();
                AsyncKeyedLock<int>.Releaser releaser;
                try
                {
                    switch (random.Next(5))
                    {
                        case 0:
                            releaser = await keyed.AcquireAsync(key).ConfigureAwait(false);
                            break;
                        case 1:
                            ValueTask<AsyncKeyedLock<int>.Releaser> pending = keyed.AcquireAsync(key, cts.Token);
                            cts.Cancel();
                            releaser = await pending.ConfigureAwait(false);
                            break;
                        case 2:
                            releaser = await keyed.AcquireAsync(key, TimeSpan.FromMilliseconds(random.Next(2))).ConfigureAwait(false);
                            break;
                        case 3:
                            cts.CancelAfter(1);
                            releaser = await keyed.AcquireAsync(key, TimeSpan.FromMilliseconds(1), cts.Token).ConfigureAwait(false);
                            break;
                        default:
                            if (!keyed.TryAcquire(key, out releaser))
                            {
                                Interlocked.Increment(ref refused);
                                continue;
                            }

                            break;
                    }
                }
                catch (OperationCanceledException)
                {
                    Interlocked.Increment(ref cancelled);
                    continue;
                }
                catch (TimeoutException)
                {
                    Interlocked.Increment(ref timedOut);
                    continue;
                }

                if (Interlocked.Increment(ref inside[key]) > PerKey)
                {
                    Interlocked.Increment(ref overlaps);
                }

                Interlocked.Increment(ref acquired);
                if (random.Next(2) == 0)
                {
                    await Task.Yield();
                }

                Interlocked.Decrement(ref inside[key]);
                releaser.Dispose();
            }
        }))));

        overlaps.Should().Be(0);
        (acquired + cancelled + timedOut + refused).Should().Be(Workers * Attempts);
        acquired.Should().BePositive();
        keyed.KeyCount.Should().Be(0);
        for (int key = 0; key < Keys; key++)
        {
            keyed.IsHeld(key).Should().BeFalse();
            keyed.Lines(key).Waiting.Should().Be(0);
        }
    }

    // ---- helpers ----

    private static void CycleKeys(AsyncKeyedLock<int> keyed, int from, int to)
    {
        for (int key = from; key < to; key++)
        {
            ValueTask<AsyncKeyedLock<int>.Releaser> acquire = keyed.AcquireAsync(key);
            if (!acquire.IsCompletedSuccessfully)
            {
                throw new InvalidOperationException($"key {key} was not acquired at once");
            }

            acquire.Result.Dispose();
        }
    }

    /// <summary>Holds a key, lets one waiter time out and one be cancelled, releases; returns a weak reference to the key.
    /// Not inlined, so no local of the caller keeps the key alive.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static async Task<WeakReference> UseAndDropKeyAsync(AsyncKeyedLock<object> keyed)
    {
        object key = new();
        AsyncKeyedLock<object>.Releaser held = await keyed.AcquireAsync(key);
        using var cts = new CancellationTokenSource();
        ValueTask<AsyncKeyedLock<object>.Releaser> cancelled = keyed.AcquireAsync(key, cts.Token);
        ValueTask<AsyncKeyedLock<object>.Releaser> timedOut = keyed.AcquireAsync(key, TimeSpan.FromMilliseconds(1));
        cts.Cancel();
        await FluentActions.Awaiting(() => cancelled.AsTask()).Should().ThrowAsync<OperationCanceledException>();
        await FluentActions.Awaiting(() => timedOut.AsTask()).Should().ThrowAsync<TimeoutException>();
        held.Dispose();
        return new WeakReference(key);
    }

    /// <summary>One key of a keyed lock, seen as a lock for the contract.</summary>
    public sealed record KeyedGate(AsyncKeyedLock<string> Keyed, string Key);

    /// <summary>A key whose own equality (the default comparer's) gives every key the same hash code.</summary>
    public sealed record CollidingKey(int Value)
    {
        public override int GetHashCode() => 7;
    }

    private sealed class ConstantHashComparer : IEqualityComparer<int>
    {
        public bool Equals(int x, int y) => x == y;

        public int GetHashCode(int obj) => 7;
    }
}
