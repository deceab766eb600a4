using System.Runtime.CompilerServices;
using AsyncIterTools;
using AsyncIterTools.Tests;
using AsyncPrimitives;

namespace AsyncTools.StressTests;

/// <summary>
/// Every public waiting member and constructor called with null, negative, zero, <see cref="Timeout.InfiniteTimeSpan"/>,
/// negative TimeSpans, <see cref="TimeSpan.MaxValue"/>, pre-cancelled tokens and tokens of disposed sources: each gets
/// its documented exception or behaviour, and the primitive stays usable. The rows are the table in docs/bad-input.md
/// (<see cref="Table_IsTheOneInTheDocs"/> keeps the two in step).
/// </summary>
public sealed class BadInputTests
{
    private static readonly TimeSpan s_minus2 = TimeSpan.FromMilliseconds(-2);
    private static readonly TimeSpan s_tooLong = TimeSpan.FromMilliseconds(4294967295);
    private static readonly TimeSpan s_longest = TimeSpan.FromMilliseconds(4294967294);

    /// <summary>One row: the member, the input, what is documented (and asserted), and the check.</summary>
    public sealed record Case(string Member, string Input, string Expected, Func<Task> Run);

    public static IReadOnlyList<Case> Cases { get; } = BuildCases();

    public static TheoryData<string> CaseNames
    {
        get
        {
            var data = new TheoryData<string>();
            foreach (Case c in Cases)
            {
                data.Add(Key(c));
            }

            return data;
        }
    }

    [Theory]
    [MemberData(nameof(CaseNames))]
    public Task BadInput_GetsTheDocumentedResult_AndLeavesThePrimitiveUsable(string name) =>
        Cases.Single(c => Key(c) == name).Run();

    [Fact]
    public void Cases_AreUnique() => Cases.Select(Key).Should().OnlyHaveUniqueItems();

    [Fact]
    public void Table_IsTheOneInTheDocs()
    {
        string docs = File.ReadAllText(Path.Combine(RepoRoot(), "docs", "bad-input.md"));
        var missing = Cases.Select(Row).Where(row => !docs.Contains(row, StringComparison.Ordinal)).ToList();
        missing.Should().BeEmpty("docs/bad-input.md lists every case; regenerate the table with:\n" + string.Join("\n", Cases.Select(Row)));
        var rows = Cases.Select(Row).ToHashSet(StringComparer.Ordinal);
        var untested = docs.Split('\n')
            .Select(line => line.TrimEnd('\r'))
            .Where(line => line.StartsWith("| `", StringComparison.Ordinal) && !rows.Contains(line))
            .ToList();
        untested.Should().BeEmpty("every row of docs/bad-input.md is a case the test runs");
    }

    private static string Key(Case c) => $"{c.Member} | {c.Input}";

    private static string Row(Case c) => $"| `{c.Member}` | {c.Input} | {c.Expected} |";

    private static string RepoRoot()
    {
        for (DirectoryInfo? dir = new(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "AsyncTools.sln")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException("AsyncTools.sln not found above " + AppContext.BaseDirectory);
    }

    private static List<Case> BuildCases()
    {
        var cases = new List<Case>();
        void Add(string member, string input, string expected, Func<Task> run) => cases.Add(new(member, input, expected, run));
        void AddSync(string member, string input, string expected, Action run) => Add(member, input, expected, () => { run(); return Task.CompletedTask; });

        // ---- Timeouts, the same rule for every waiting member of every primitive ----
        // Each case gets fresh primitives: the iterators build new ones on every enumeration.
        foreach ((string member, int index) in TimedWaits().Select((w, i) => (w.Member, i)))
        {
            Task Wait(TimeSpan t) => TimedWaits().ElementAt(index).Wait(t);
            Func<TimeSpan, Task> wait = Wait;
            AddSync(member, "`TimeSpan.FromMilliseconds(-2)`", "`ArgumentOutOfRangeException` (timeout)", () => ShouldRejectTimeout(() => wait(s_minus2)));
            AddSync(member, "`TimeSpan.MinValue`", "`ArgumentOutOfRangeException` (timeout)", () => ShouldRejectTimeout(() => wait(TimeSpan.MinValue)));
            AddSync(member, "`TimeSpan.MaxValue`", "`ArgumentOutOfRangeException` (timeout)", () => ShouldRejectTimeout(() => wait(TimeSpan.MaxValue)));
            AddSync(member, "4294967295 ms", "`ArgumentOutOfRangeException` (timeout)", () => ShouldRejectTimeout(() => wait(s_tooLong)));
            Add(member, "4294967294 ms (the longest), must wait", "accepted; waits", async () =>
            {
                (_, Func<TimeSpan, Task> fresh, Func<Task> usable) = TimedWaits().ElementAt(index);
                fresh(s_longest).IsCompleted.Should().BeFalse();
                await usable();
            });
            Add(member, "`Timeout.InfiniteTimeSpan`, must wait", "waits without limit", async () =>
            {
                (_, Func<TimeSpan, Task> fresh, Func<Task> usable) = TimedWaits().ElementAt(index);
                fresh(Timeout.InfiniteTimeSpan).IsCompleted.Should().BeFalse();
                await usable();
            });
            Add(member, "`TimeSpan.Zero`, must wait", "`TimeoutException` at once; nothing queued", async () =>
            {
                (_, Func<TimeSpan, Task> fresh, Func<Task> usable) = TimedWaits().ElementAt(index);
                Task t = fresh(TimeSpan.Zero);
                t.IsFaulted.Should().BeTrue();
                t.Exception!.InnerException.Should().BeOfType<TimeoutException>();
                await usable();
            });
        }

        // ---- Tokens: pre-cancelled fails even when the call could succeed; a disposed source's token is inert ----
        foreach ((string member, int index) in TokenWaits().Select((w, i) => (w.Member, i)))
        {
            Task SucceedsNow(CancellationToken ct) => TokenWaits().ElementAt(index).SucceedsNow(ct);
            (Task, Action) MustWait(CancellationToken ct) => TokenWaits().ElementAt(index).MustWait(ct);
            Func<CancellationToken, Task> succeedsNow = SucceedsNow;
            Func<CancellationToken, (Task Wait, Action Grant)> mustWait = MustWait;
            Add(member, "pre-cancelled token, could succeed now", "`OperationCanceledException` at once; takes nothing", async () =>
            {
                using var cts = new CancellationTokenSource();
                cts.Cancel();
                Func<CancellationToken, Task> same = TokenWaits().ElementAt(index).SucceedsNow; // one primitive for both calls
                Task t = same(cts.Token);
                t.IsCanceled.Should().BeTrue();
                await same(CancellationToken.None).Bounded(); // what it would have taken is still there
            });
            Add(member, "token of a disposed, cancelled source", "`OperationCanceledException` at once", () =>
            {
                var cts = new CancellationTokenSource();
                CancellationToken token = cts.Token;
                cts.Cancel();
                cts.Dispose();
                succeedsNow(token).IsCanceled.Should().BeTrue();
                return Task.CompletedTask;
            });
            Add(member, "token of a disposed, uncancelled source, must wait", "waits as with `CancellationToken.None`", async () =>
            {
                var cts = new CancellationTokenSource();
                CancellationToken token = cts.Token;
                cts.Dispose();
                (Task wait, Action grant) = mustWait(token);
                wait.IsCompleted.Should().BeFalse();
                grant();
                await wait.Bounded();
            });
        }

        // ---- AsyncLock ----
        AddSync("AsyncLock.Release()", "lock not held", "`SynchronizationLockException`; lock stays usable", () =>
        {
            var gate = new AsyncLock();
            gate.Invoking(g => g.Release()).Should().Throw<SynchronizationLockException>();
            gate.TryAcquire(out AsyncLock.Releaser r).Should().BeTrue();
            r.Dispose();
        });
        AddSync("AsyncLock.Releaser.Dispose()", "`default(Releaser)`", "does nothing", () =>
        {
            default(AsyncLock.Releaser).Dispose();
        });
        AddSync("AsyncLock.Releaser.Dispose()", "disposed twice, lock free by then", "second throws `SynchronizationLockException`", () =>
        {
            var gate = new AsyncLock();
            gate.TryAcquire(out AsyncLock.Releaser r).Should().BeTrue();
            r.Dispose();
            r.Invoking(x => x.Dispose()).Should().Throw<SynchronizationLockException>();
            gate.IsLocked.Should().BeFalse();
        });
        AddSync("AsyncLock.Releaser.Dispose()", "disposed twice, another caller holds the lock by then", "releases that caller's hold; no exception", () =>
        {
            var gate = new AsyncLock();
            gate.TryAcquire(out AsyncLock.Releaser stale).Should().BeTrue();
            stale.Dispose();
            gate.TryAcquire(out AsyncLock.Releaser holder).Should().BeTrue();
            stale.Dispose();
            gate.IsLocked.Should().BeFalse();
            holder.Invoking(x => x.Dispose()).Should().Throw<SynchronizationLockException>();
            gate.TryAcquire(out AsyncLock.Releaser again).Should().BeTrue();
            again.Dispose();
        });
        AddSync("new AsyncLock(timeProvider)", "`null`", "uses `TimeProvider.System`", () => new AsyncLock(null).IsLocked.Should().BeFalse());

        // ---- AsyncSemaphore ----
        AddSync("new AsyncSemaphore(initialCount, maxCount)", "initialCount -1", "`ArgumentOutOfRangeException` (initialCount)", () =>
            Ctor(() => new AsyncSemaphore(-1), "initialCount"));
        AddSync("new AsyncSemaphore(initialCount, maxCount)", "maxCount 0", "`ArgumentOutOfRangeException` (maxCount)", () =>
            Ctor(() => new AsyncSemaphore(0, 0), "maxCount"));
        AddSync("new AsyncSemaphore(initialCount, maxCount)", "maxCount -1", "`ArgumentOutOfRangeException` (maxCount)", () =>
            Ctor(() => new AsyncSemaphore(0, -1), "maxCount"));
        AddSync("new AsyncSemaphore(initialCount, maxCount)", "initialCount 3 > maxCount 2", "`ArgumentOutOfRangeException` (initialCount)", () =>
            Ctor(() => new AsyncSemaphore(3, 2), "initialCount"));
        AddSync("AsyncSemaphore.Release(releaseCount)", "0", "`ArgumentOutOfRangeException` (releaseCount)", () =>
            Param<ArgumentOutOfRangeException>(() => new AsyncSemaphore(0).Release(0), "releaseCount"));
        AddSync("AsyncSemaphore.Release(releaseCount)", "-1", "`ArgumentOutOfRangeException` (releaseCount)", () =>
            Param<ArgumentOutOfRangeException>(() => new AsyncSemaphore(0).Release(-1), "releaseCount"));
        AddSync("AsyncSemaphore.Release(releaseCount)", "`int.MaxValue` on (0, unbounded), then 1", "count becomes `int.MaxValue`; then `SemaphoreFullException` (no overflow)", () =>
        {
            var s = new AsyncSemaphore(0);
            s.Release(int.MaxValue);
            s.CurrentCount.Should().Be(int.MaxValue);
            s.Invoking(x => x.Release()).Should().Throw<SemaphoreFullException>();
            s.CurrentCount.Should().Be(int.MaxValue);
        });
        AddSync("AsyncSemaphore.Release(releaseCount)", "2 on (1, max 2)", "`SemaphoreFullException`; count unchanged", () =>
        {
            var s = new AsyncSemaphore(1, 2);
            s.Invoking(x => x.Release(2)).Should().Throw<SemaphoreFullException>();
            s.CurrentCount.Should().Be(1);
        });
        Add("AsyncSemaphore.Release(releaseCount)", "6 with waiters, max 5", "`SemaphoreFullException`; waiters still wait", async () =>
        {
            var s = new AsyncSemaphore(0, 5);
            Task<AsyncSemaphore.Releaser> w = s.AcquireAsync().AsTask();
            s.Invoking(x => x.Release(6)).Should().Throw<SemaphoreFullException>();
            w.IsCompleted.Should().BeFalse();
            s.Release();
            await w.Bounded();
        });

        Add("AsyncSemaphore.Releaser.Dispose()", "disposed twice, no `maxCount`", "releases twice: one permit more than before, no exception", async () =>
        {
            var s = new AsyncSemaphore(1);
            AsyncSemaphore.Releaser r = await s.AcquireAsync().AsTask().Bounded();
            r.Dispose();
            r.Dispose();
            s.CurrentCount.Should().Be(2);
        });
        Add("AsyncSemaphore.Releaser.Dispose()", "disposed twice, `maxCount` reached", "second throws `SemaphoreFullException`; count unchanged", async () =>
        {
            var s = new AsyncSemaphore(1, 1);
            AsyncSemaphore.Releaser r = await s.AcquireAsync().AsTask().Bounded();
            r.Dispose();
            r.Invoking(x => x.Dispose()).Should().Throw<SemaphoreFullException>();
            s.CurrentCount.Should().Be(1);
        });

        // ---- AsyncReaderWriterLock ----
        AddSync("new AsyncReaderWriterLock(maxReaders)", "0", "`ArgumentOutOfRangeException` (maxReaders)", () =>
            Ctor(() => new AsyncReaderWriterLock(0), "maxReaders"));
        AddSync("new AsyncReaderWriterLock(maxReaders)", "-1", "`ArgumentOutOfRangeException` (maxReaders)", () =>
            Ctor(() => new AsyncReaderWriterLock(-1), "maxReaders"));
        AddSync("AsyncReaderWriterLock.ReleaseRead()", "no read lock held", "`SynchronizationLockException`", () =>
            new AsyncReaderWriterLock().Invoking(l => l.ReleaseRead()).Should().Throw<SynchronizationLockException>());
        AddSync("AsyncReaderWriterLock.ReleaseWrite()", "only a read lock held", "`SynchronizationLockException`; the read lock stays held", () =>
        {
            var rw = new AsyncReaderWriterLock();
            rw.TryAcquireRead(out AsyncReaderWriterLock.Releaser r).Should().BeTrue();
            rw.Invoking(l => l.ReleaseWrite()).Should().Throw<SynchronizationLockException>();
            rw.CurrentReaderCount.Should().Be(1);
            r.Dispose();
        });
        AddSync("AsyncReaderWriterLock.Releaser.Dispose()", "write releaser disposed twice, lock free by then", "second throws `SynchronizationLockException`", () =>
        {
            var rw = new AsyncReaderWriterLock();
            rw.TryAcquireWrite(out AsyncReaderWriterLock.Releaser w).Should().BeTrue();
            w.Dispose();
            w.Invoking(x => x.Dispose()).Should().Throw<SynchronizationLockException>();
            rw.IsWriteLockHeld.Should().BeFalse();
        });
        AddSync("AsyncReaderWriterLock.Releaser.Dispose()", "write releaser disposed twice, another writer holds by then", "releases that writer's lock; no exception", () =>
        {
            var rw = new AsyncReaderWriterLock();
            rw.TryAcquireWrite(out AsyncReaderWriterLock.Releaser stale).Should().BeTrue();
            stale.Dispose();
            rw.TryAcquireWrite(out AsyncReaderWriterLock.Releaser holder).Should().BeTrue();
            stale.Dispose();
            rw.IsWriteLockHeld.Should().BeFalse();
            holder.Invoking(x => x.Dispose()).Should().Throw<SynchronizationLockException>();
            rw.TryAcquireWrite(out AsyncReaderWriterLock.Releaser again).Should().BeTrue();
            again.Dispose();
        });
        AddSync("AsyncReaderWriterLock.Releaser.Dispose()", "read releaser disposed twice, another reader holds by then", "releases that reader's read lock; no exception", () =>
        {
            var rw = new AsyncReaderWriterLock();
            rw.TryAcquireRead(out AsyncReaderWriterLock.Releaser stale).Should().BeTrue();
            rw.TryAcquireRead(out AsyncReaderWriterLock.Releaser holder).Should().BeTrue();
            stale.Dispose();
            stale.Dispose();
            rw.CurrentReaderCount.Should().Be(0);
            holder.Invoking(x => x.Dispose()).Should().Throw<SynchronizationLockException>();
            rw.TryAcquireWrite(out AsyncReaderWriterLock.Releaser writer).Should().BeTrue();
            writer.Dispose();
        });

        // ---- AsyncCondition ----
        AddSync("AsyncCondition.WaitAsync()", "lock not held", "`SynchronizationLockException`", () =>
            new AsyncCondition().Invoking(c => c.WaitAsync()).Should().Throw<SynchronizationLockException>());
        Add("AsyncCondition.WaitAsync()", "pre-cancelled token, lock held", "`OperationCanceledException`; the lock is still held", async () =>
        {
            var c = new AsyncCondition();
            await c.AcquireAsync();
            Task t = c.WaitAsync(new CancellationToken(true)).AsTask();
            t.IsCanceled.Should().BeTrue();
            c.IsLocked.Should().BeTrue();
            c.Release();
        });
        Add("AsyncCondition.WaitAsync(timeout)", "`TimeSpan.Zero`, lock held", "`TimeoutException`; the lock is still held", async () =>
        {
            var c = new AsyncCondition();
            await c.AcquireAsync();
            Task t = c.WaitAsync(TimeSpan.Zero).AsTask();
            await t.Invoking(x => x).Should().ThrowAsync<TimeoutException>();
            c.IsLocked.Should().BeTrue();
            c.Release();
        });
        AddSync("AsyncCondition.WaitUntilAsync(predicate)", "`null`", "`ArgumentNullException` (predicate)", () =>
            Param<ArgumentNullException>(() => new AsyncCondition().WaitUntilAsync(null!), "predicate"));
        AddSync("AsyncCondition.WaitUntilAsync(predicate)", "lock not held", "`SynchronizationLockException`", () =>
            new AsyncCondition().Invoking(c => c.WaitUntilAsync(() => true)).Should().Throw<SynchronizationLockException>());
        Add("AsyncCondition.WaitUntilAsync(predicate)", "pre-cancelled token, predicate already true", "completes: the predicate is checked first, no wait happens", async () =>
        {
            var c = new AsyncCondition();
            await c.AcquireAsync();
            c.WaitUntilAsync(() => true, new CancellationToken(true)).IsCompletedSuccessfully.Should().BeTrue();
            c.Release();
        });
        Add("AsyncCondition.WaitUntilAsync(predicate)", "pre-cancelled token, predicate false", "`OperationCanceledException`; the lock is still held", async () =>
        {
            var c = new AsyncCondition();
            await c.AcquireAsync();
            Func<Task> act = async () => await c.WaitUntilAsync(() => false, new CancellationToken(true));
            await act.Should().ThrowAsync<OperationCanceledException>();
            c.IsLocked.Should().BeTrue();
            c.Release();
        });
        AddSync("AsyncCondition.Notify(count)", "-1", "`ArgumentOutOfRangeException` (count)", () =>
            Param<ArgumentOutOfRangeException>(() => new AsyncCondition().Notify(-1), "count"));
        Add("AsyncCondition.Notify(count)", "0, a waiter waiting", "wakes nobody", async () =>
        {
            var c = new AsyncCondition();
            await c.AcquireAsync();
            Task w = c.WaitAsync().AsTask();
            c.Notify(0);
            c.Lines.Waiting.Should().Be(1);
            c.NotifyAll();
            await w.Bounded();
            c.Release();
        });
        AddSync("AsyncCondition.Release()", "lock not held", "`SynchronizationLockException`", () =>
            new AsyncCondition().Invoking(c => c.Release()).Should().Throw<SynchronizationLockException>());

        // ---- AsyncKeyedLock ----
        AddSync("new AsyncKeyedLock(maxCountPerKey, comparer, timeProvider)", "maxCountPerKey 0", "`ArgumentOutOfRangeException` (maxCountPerKey)", () =>
            Ctor(() => new AsyncKeyedLock<string>(0), "maxCountPerKey"));
        AddSync("new AsyncKeyedLock(maxCountPerKey, comparer, timeProvider)", "maxCountPerKey -1", "`ArgumentOutOfRangeException` (maxCountPerKey)", () =>
            Ctor(() => new AsyncKeyedLock<string>(-1), "maxCountPerKey"));
        AddSync("new AsyncKeyedLock(maxCountPerKey, comparer, timeProvider)", "comparer `null`", "`EqualityComparer<TKey>.Default`: equal keys that are different objects are one key", () =>
        {
            var keyed = new AsyncKeyedLock<string>(comparer: null);
            keyed.TryAcquire(new string('k', 2), out AsyncKeyedLock<string>.Releaser r).Should().BeTrue();
            keyed.TryAcquire(new string('k', 2), out _).Should().BeFalse();
            keyed.KeyCount.Should().Be(1);
            r.Dispose();
            keyed.KeyCount.Should().Be(0);
        });
        AddSync("new AsyncKeyedLock(maxCountPerKey, comparer, timeProvider)", "timeProvider `null`", "uses `TimeProvider.System`", () =>
        {
            var keyed = new AsyncKeyedLock<string>(timeProvider: null);
            keyed.KeyCount.Should().Be(0);
            keyed.MaxCountPerKey.Should().Be(1);
        });
        AddSync("AsyncKeyedLock.AcquireAsync / TryAcquire / IsHeld(key)", "`null` key", "`ArgumentNullException` (key) at the call; no key created", () =>
        {
            var keyed = new AsyncKeyedLock<string>();
            Param<ArgumentNullException>(() => keyed.AcquireAsync(null!), "key");
            Param<ArgumentNullException>(() => keyed.AcquireAsync(null!, TimeSpan.FromSeconds(1)), "key");
            Param<ArgumentNullException>(() => keyed.AcquireAsync(null!, new CancellationToken(true)), "key");
            Param<ArgumentNullException>(() => keyed.TryAcquire(null!, out _), "key");
            Param<ArgumentNullException>(() => keyed.IsHeld(null!), "key");
            keyed.KeyCount.Should().Be(0);
            keyed.TryAcquire("k", out AsyncKeyedLock<string>.Releaser r).Should().BeTrue();
            r.Dispose();
        });
        AddSync("AsyncKeyedLock.AcquireAsync(key, timeout)", "invalid timeout (-2 ms) for a key nobody holds", "`ArgumentOutOfRangeException` (timeout); no key created", () =>
        {
            var keyed = new AsyncKeyedLock<string>();
            ShouldRejectTimeout(() => keyed.AcquireAsync("k", s_minus2).AsTask());
            keyed.KeyCount.Should().Be(0);
            keyed.IsHeld("k").Should().BeFalse();
        });
        AddSync("AsyncKeyedLock.AcquireAsync(key, timeout)", "`TimeSpan.Zero`, key nobody holds", "acquired at once", () =>
        {
            var keyed = new AsyncKeyedLock<string>();
            ValueTask<AsyncKeyedLock<string>.Releaser> acquire = keyed.AcquireAsync("k", TimeSpan.Zero);
            acquire.IsCompletedSuccessfully.Should().BeTrue();
            keyed.IsHeld("k").Should().BeTrue();
            acquire.Result.Dispose();
            keyed.KeyCount.Should().Be(0);
        });
        AddSync("AsyncKeyedLock.AcquireAsync(key, cancellationToken)", "pre-cancelled token, key nobody holds", "`OperationCanceledException` at once; no key created", () =>
        {
            var keyed = new AsyncKeyedLock<string>();
            keyed.AcquireAsync("k", new CancellationToken(true)).AsTask().IsCanceled.Should().BeTrue();
            keyed.AcquireAsync("k", TimeSpan.Zero, new CancellationToken(true)).AsTask().IsCanceled.Should().BeTrue();
            keyed.KeyCount.Should().Be(0);
        });
        Add("AsyncKeyedLock.TryAcquire(key)", "key held, a waiter waiting", "returns false; nothing queued; the waiter is served next", async () =>
        {
            var keyed = new AsyncKeyedLock<string>();
            keyed.TryAcquire("k", out AsyncKeyedLock<string>.Releaser holder).Should().BeTrue();
            Task<AsyncKeyedLock<string>.Releaser> waiter = keyed.AcquireAsync("k").AsTask();
            keyed.TryAcquire("k", out AsyncKeyedLock<string>.Releaser none).Should().BeFalse();
            none.Dispose(); // default(Releaser)
            keyed.Lines("k").Waiting.Should().Be(1);
            holder.Dispose();
            (await waiter.Bounded()).Dispose();
            keyed.KeyCount.Should().Be(0);
        });
        AddSync("AsyncKeyedLock.Releaser.Dispose()", "`default(Releaser)`", "does nothing", () =>
        {
            default(AsyncKeyedLock<string>.Releaser).Dispose();
        });
        AddSync("AsyncKeyedLock.Releaser.Dispose()", "disposed twice, key free by then", "second throws `SynchronizationLockException`", () =>
        {
            var keyed = new AsyncKeyedLock<string>();
            keyed.TryAcquire("k", out AsyncKeyedLock<string>.Releaser r).Should().BeTrue();
            r.Dispose();
            r.Invoking(x => x.Dispose()).Should().Throw<SynchronizationLockException>();
            keyed.KeyCount.Should().Be(0);
        });
        AddSync("AsyncKeyedLock.Releaser.Dispose()", "disposed twice, the key freed and then taken by another caller", "second throws `SynchronizationLockException`; that caller keeps the key", () =>
        {
            var keyed = new AsyncKeyedLock<string>();
            keyed.TryAcquire("k", out AsyncKeyedLock<string>.Releaser stale).Should().BeTrue();
            stale.Dispose();
            keyed.TryAcquire("k", out AsyncKeyedLock<string>.Releaser holder).Should().BeTrue();
            stale.Invoking(x => x.Dispose()).Should().Throw<SynchronizationLockException>();
            keyed.IsHeld("k").Should().BeTrue();
            holder.Dispose();
            keyed.KeyCount.Should().Be(0);
        });
        AddSync("AsyncKeyedLock.Releaser.Dispose()", "disposed twice, maxCountPerKey 2, another caller holds the key too", "releases that caller's hold; no exception", () =>
        {
            var keyed = new AsyncKeyedLock<string>(2);
            keyed.TryAcquire("k", out AsyncKeyedLock<string>.Releaser stale).Should().BeTrue();
            keyed.TryAcquire("k", out AsyncKeyedLock<string>.Releaser holder).Should().BeTrue();
            stale.Dispose();
            stale.Dispose();
            keyed.IsHeld("k").Should().BeFalse();
            keyed.KeyCount.Should().Be(0);
            holder.Invoking(x => x.Dispose()).Should().Throw<SynchronizationLockException>();
            keyed.TryAcquire("k", out AsyncKeyedLock<string>.Releaser again).Should().BeTrue();
            again.Dispose();
        });
        AddSync("AsyncKeyedLock.AcquireAsync / TryAcquire(key)", "comparer throws", "the comparer's exception at the call; keys unchanged", () =>
        {
            var keyed = new AsyncKeyedLock<string>(comparer: new ThrowingComparer());
            keyed.Invoking(k => k.TryAcquire("bad-hash", out _)).Should().Throw<ArithmeticException>();
            keyed.Invoking(k => k.AcquireAsync("bad-hash")).Should().Throw<ArithmeticException>();
            keyed.TryAcquire("bad-equals", out AsyncKeyedLock<string>.Releaser r).Should().BeTrue(); // Equals is not needed for a key alone in its bucket
            keyed.Invoking(k => k.AcquireAsync("bad-equals")).Should().Throw<ArithmeticException>();
            keyed.KeyCount.Should().Be(1);
            r.Dispose();
            keyed.KeyCount.Should().Be(0);
        });

        // ---- AsyncThread ----
        Add("new AsyncThread(name)", "`null`", "`Name` is null; the thread is named `AsyncThread`", async () =>
        {
            await using var thread = new AsyncThread(null);
            thread.Name.Should().BeNull();
            (await thread.RunAsync(() => Thread.CurrentThread.Name).Bounded()).Should().Be("AsyncThread");
        });
        Add("AsyncThread.RunAsync(work)", "`null` (`Func<T>` and `Action`)", "`ArgumentNullException` (work) at the call; nothing queued", async () =>
        {
            await using var thread = new AsyncThread();
            Param<ArgumentNullException>(() => thread.RunAsync((Func<int>)null!), "work");
            Param<ArgumentNullException>(() => thread.RunAsync((Action)null!), "work");
            thread.ToString().Should().Be("AsyncThread(queued=0)");
            (await thread.RunAsync(() => 1).Bounded()).Should().Be(1);
        });
        Add("AsyncThread.RunAsync(work, cancellationToken)", "pre-cancelled token, could succeed now", "`OperationCanceledException` at once; the work never runs", async () =>
        {
            await using var thread = new AsyncThread();
            using var cts = new CancellationTokenSource();
            cts.Cancel();
            int ran = 0;
            thread.RunAsync(() => ran++, cts.Token).IsCanceled.Should().BeTrue();
            thread.RunAsync(() => { ran++; }, cts.Token).IsCanceled.Should().BeTrue();
            await thread.RunAsync(() => { }).Bounded(); // what was queued before this has run
            ran.Should().Be(0);
        });
        Add("AsyncThread.RunAsync(work, cancellationToken)", "token of a disposed, cancelled source", "`OperationCanceledException` at once", async () =>
        {
            await using var thread = new AsyncThread();
            var cts = new CancellationTokenSource();
            CancellationToken token = cts.Token;
            cts.Cancel();
            cts.Dispose();
            thread.RunAsync(() => 1, token).IsCanceled.Should().BeTrue();
        });
        Add("AsyncThread.RunAsync(work, cancellationToken)", "token of a disposed, uncancelled source, must wait", "waits as with `CancellationToken.None`", async () =>
        {
            using var gate = new ManualResetEventSlim();
            await using var thread = new AsyncThread();
            try
            {
                Task busy = thread.RunAsync(() => gate.Wait()); // holds the thread until granted
                var cts = new CancellationTokenSource();
                CancellationToken token = cts.Token;
                cts.Dispose();
                Task<int> wait = thread.RunAsync(() => 1, token);
                wait.IsCompleted.Should().BeFalse();
                gate.Set();
                (await wait.Bounded()).Should().Be(1);
                await busy.Bounded();
            }
            finally
            {
                gate.Set(); // the thread is never left blocked, whatever failed
            }
        });
        Add("AsyncThread.RunAsync(work)", "after `DisposeAsync()` (also with a pre-cancelled token)", "`ObjectDisposedException` at the call; the work never runs", async () =>
        {
            var thread = new AsyncThread();
            await thread.DisposeAsync().AsTask().Bounded();
            int ran = 0;
            Action func = () => thread.RunAsync(() => ran++);
            Action action = () => thread.RunAsync(() => { ran++; });
            Action cancelled = () => thread.RunAsync(() => ran++, new CancellationToken(true));
            func.Should().Throw<ObjectDisposedException>();
            action.Should().Throw<ObjectDisposedException>();
            cancelled.Should().Throw<ObjectDisposedException>();
            ran.Should().Be(0);
        });
        Add("AsyncThread.DisposeAsync()", "called twice, work queued", "harmless; the queued work runs, both complete", async () =>
        {
            using var gate = new ManualResetEventSlim();
            var thread = new AsyncThread();
            try
            {
                Task busy = thread.RunAsync(() => gate.Wait()); // holds the thread until granted
                Task<int> queued = thread.RunAsync(() => 2);
                Task first = thread.DisposeAsync().AsTask();
                Task second = thread.DisposeAsync().AsTask();
                queued.IsCompleted.Should().BeFalse();
                first.IsCompleted.Should().BeFalse();
                gate.Set();
                await first.Bounded();
                await second.Bounded();
                (await queued.Bounded()).Should().Be(2);
                await busy.Bounded();
            }
            finally
            {
                gate.Set(); // the thread is never left blocked, whatever failed
            }
        });

        // ---- AsyncEvent / AsyncResult ----
        AddSync("AsyncEvent.Set() / Clear()", "Set twice, Clear when clear", "no-ops", () =>
        {
            var e = new AsyncEvent();
            e.Clear();
            e.Set();
            e.Set();
            e.IsSet.Should().BeTrue();
        });
        AddSync("AsyncResult.SetException(exception)", "`null`", "`ArgumentNullException` (exception); still unset", () =>
        {
            var r = new AsyncResult<int>();
            Param<ArgumentNullException>(() => r.SetException(null!), "exception");
            Param<ArgumentNullException>(() => r.TrySetException(null!), "exception");
            r.IsSet.Should().BeFalse();
        });
        AddSync("AsyncResult.Set(value)", "second time", "`InvalidOperationException`; `TrySet` returns false; the first value stays", () =>
        {
            var r = new AsyncResult<int>();
            r.Set(1);
            r.Invoking(x => x.Set(2)).Should().Throw<InvalidOperationException>();
            r.TrySet(3).Should().BeFalse();
            r.TryGet(out int v).Should().BeTrue();
            v.Should().Be(1);
        });
        AddSync("AsyncResult.Set(value)", "`null` (reference type)", "accepted: the value is null", () =>
        {
            var r = new AsyncResult<string?>();
            r.Set(null);
            r.TryGet(out string? v).Should().BeTrue();
            v.Should().BeNull();
        });

        // ---- Queues ----
        AddSync("new AsyncQueue / AsyncLifoQueue / AsyncPriorityQueue(maxSize)", "-1", "`ArgumentOutOfRangeException` (maxSize)", () =>
        {
            Ctor(() => new AsyncQueue<int>(-1), "maxSize");
            Ctor(() => new AsyncLifoQueue<int>(-1), "maxSize");
            Ctor(() => new AsyncPriorityQueue<int>(-1), "maxSize");
        });
        AddSync("new AsyncPriorityQueue(comparer)", "`null`", "`Comparer<T>.Default`", () =>
            new AsyncPriorityQueue<int>(comparer: null).Comparer.Should().BeSameAs(Comparer<int>.Default));
        AddSync("AsyncQueue.PutAsync(item)", "`null` item (reference type)", "accepted", () =>
        {
            var q = new AsyncQueue<string?>();
            q.PutAsync(null).IsCompletedSuccessfully.Should().BeTrue();
            q.TryGet(out string? v).Should().BeTrue();
            v.Should().BeNull();
        });
        AddSync("AsyncQueue.TaskDone()", "nothing unfinished", "`InvalidOperationException`; count unchanged", () =>
        {
            var q = new AsyncQueue<int>();
            q.Invoking(x => x.TaskDone()).Should().Throw<InvalidOperationException>();
            q.UnfinishedTasks.Should().Be(0);
        });
        AddSync("AsyncQueue.PutAsync / TryPut", "after `Shutdown()`", "`QueueShutDownException`; nothing enqueued", () =>
        {
            var q = new AsyncQueue<int>();
            q.Shutdown();
            q.PutAsync(1).AsTask().Exception!.InnerException.Should().BeOfType<QueueShutDownException>();
            q.Invoking(x => x.TryPut(1)).Should().Throw<QueueShutDownException>();
            q.UnfinishedTasks.Should().Be(0);
        });
        AddSync("AsyncQueue.Shutdown(immediate)", "called twice, then `immediate: true`", "harmless; the second drops what is left", () =>
        {
            var q = new AsyncQueue<int>();
            q.TryPut(1).Should().BeTrue();
            q.Shutdown();
            q.Shutdown();
            q.Count.Should().Be(1);
            q.Shutdown(immediate: true);
            q.Count.Should().Be(0);
            q.UnfinishedTasks.Should().Be(0);
        });
        AddSync("AsyncPriorityQueue.PutAsync(item)", "comparer throws", "the comparer's exception; queue unchanged", () =>
        {
            var q = new AsyncPriorityQueue<int>(comparer: Comparer<int>.Create((a, b) => a == 13 || b == 13 ? throw new ArithmeticException() : a.CompareTo(b)));
            q.TryPut(1).Should().BeTrue();
            q.Invoking(x => x.TryPut(13)).Should().Throw<ArithmeticException>();
            q.Count.Should().Be(1);
            q.UnfinishedTasks.Should().Be(1);
        });
        Add("AsyncQueue.GetAsyncEnumerator(token)", "pre-cancelled token, items queued", "`MoveNextAsync` throws `OperationCanceledException`; nothing taken", async () =>
        {
            var q = new AsyncQueue<int>();
            q.TryPut(1).Should().BeTrue();
            await using IAsyncEnumerator<int> e = q.GetAsyncEnumerator(new CancellationToken(true));
            Func<Task> act = async () => await e.MoveNextAsync();
            await act.Should().ThrowAsync<OperationCanceledException>();
            q.Count.Should().Be(1);
        });

        // ---- AsyncIterTools: eager argument checks, then enumeration-time behaviour ----
        IAsyncEnumerable<int> src = Sources.Of(SourceMode.Synchronous, 1, 2, 3);
        Func<int, CancellationToken, ValueTask<int>> sel = (x, _) => new ValueTask<int>(x);
        AddSync("Map / MapUnordered(source, selector, maxConcurrency)", "source `null`", "`ArgumentNullException` (source) at the call", () =>
        {
            Param<ArgumentNullException>(() => AsyncIter.Map(null!, sel, 1), "source");
            Param<ArgumentNullException>(() => AsyncIter.MapUnordered(null!, sel, 1), "source");
        });
        AddSync("Map / MapUnordered(source, selector, maxConcurrency)", "selector `null`", "`ArgumentNullException` (selector) at the call", () =>
        {
            Param<ArgumentNullException>(() => src.Map<int, int>(null!, 1), "selector");
            Param<ArgumentNullException>(() => src.MapUnordered<int, int>(null!, 1), "selector");
        });
        AddSync("Map / MapUnordered(source, selector, maxConcurrency)", "maxConcurrency 0 or -1", "`ArgumentOutOfRangeException` (maxConcurrency) at the call", () =>
        {
            foreach (int bad in new[] { 0, -1 })
            {
                Param<ArgumentOutOfRangeException>(() => src.Map(sel, bad), "maxConcurrency");
                Param<ArgumentOutOfRangeException>(() => src.MapUnordered(sel, bad), "maxConcurrency");
            }
        });
        Add("Map(source, selector, maxConcurrency)", "`int.MaxValue`", "accepted (bounded by the source)", async () =>
            (await src.Map(sel, int.MaxValue).ToArrayAsync()).Should().Equal(1, 2, 3));
        AddSync("Merge(sources)", "`null` array, or a `null` element", "`ArgumentNullException` (sources) at the call", () =>
        {
            Param<ArgumentNullException>(() => AsyncIter.Merge<int>(null!), "sources");
            Param<ArgumentNullException>(() => AsyncIter.Merge(src, null!), "sources");
            Param<ArgumentNullException>(() => AsyncIter.Merge((IEnumerable<IAsyncEnumerable<int>>)null!, 1), "sources");
        });
        AddSync("Merge(sources, maxConcurrency)", "0 or -1", "`ArgumentOutOfRangeException` (maxConcurrency) at the call", () =>
        {
            Param<ArgumentOutOfRangeException>(() => AsyncIter.Merge(new[] { src }, 0), "maxConcurrency");
            Param<ArgumentOutOfRangeException>(() => AsyncIter.Merge(new[] { src }, -1), "maxConcurrency");
        });
        Add("Merge(sources)", "empty array", "an empty sequence", async () =>
            (await AsyncIter.Merge<int>().ToArrayAsync()).Should().BeEmpty());
        Add("Merge(sources, maxConcurrency)", "a `null` element in the sequence", "`ArgumentNullException` (sources) when reached", async () =>
        {
            Func<Task> act = async () => await AsyncIter.Merge(new[] { src, null! }, 1).ToArrayAsync();
            (await act.Should().ThrowExactlyAsync<ArgumentNullException>()).Which.ParamName.Should().Be("sources");
        });
        AddSync("Chain, ZipLongest, Merge (array forms)", "a `null` element", "`ArgumentNullException` naming the array, at the call", () =>
        {
            Param<ArgumentNullException>(() => AsyncIter.Chain(new[] { src, null! }), "sources");
            Param<ArgumentNullException>(() => src.Chain(src, null!), "others");
            Param<ArgumentNullException>(() => AsyncIter.ZipLongest(0, src, null!), "sources");
            Param<ArgumentNullException>(() => AsyncIter.Merge(src, null!), "sources");
        });
        Add("Chain, Product, Flatten, Merge, GatherAsync, AsCompleted (sequence forms)", "a `null` element", "`ArgumentNullException` naming the sequence, when reached; items before it are yielded", async () =>
        {
            IEnumerable<IAsyncEnumerable<int>> withNull = new List<IAsyncEnumerable<int>> { src, null! };
            await NullElementAsync(AsyncIter.Chain(withNull), "sources");
            await NullElementAsync(AsyncIter.Product(withNull).Select(row => row[0]), "sources");
            await NullElementAsync(Sources.From(withNull).Flatten(), "source");
            await NullElementAsync(AsyncIter.Merge(withNull, 1), "sources");
            await NullElementAsync(AsyncIter.AsCompleted(new[] { Task.FromResult(1), null! }), "tasks");
            await NullElementAsync(AsyncIter.AsCompleted(new Func<CancellationToken, Task<int>>[] { _ => Task.FromResult(1), null! }), "work");
            (await AsyncIter.GatherAsync(new Func<CancellationToken, Task<int>>[] { _ => Task.FromResult(1), null! }).Invoking(x => x)
                .Should().ThrowExactlyAsync<ArgumentNullException>()).Which.ParamName.Should().Be("work");
        });
        AddSync("GatherAsync(work, maxConcurrency)", "work `null`; maxConcurrency 0 or -1", "`ArgumentNullException` (work) / `ArgumentOutOfRangeException` (maxConcurrency) at the call", () =>
        {
            Param<ArgumentNullException>(() => AsyncIter.GatherAsync<int>(null!), "work");
            Param<ArgumentOutOfRangeException>(() => AsyncIter.GatherAsync(Array.Empty<Func<CancellationToken, Task<int>>>(), 0), "maxConcurrency");
            Param<ArgumentOutOfRangeException>(() => AsyncIter.GatherAsync(Array.Empty<Func<CancellationToken, Task<int>>>(), -1), "maxConcurrency");
        });
        Add("GatherAsync(work, maxConcurrency, cancellationToken)", "pre-cancelled token", "a cancelled task; no work starts", async () =>
        {
            int started = 0;
            Task<int[]> t = AsyncIter.GatherAsync(new Func<CancellationToken, Task<int>>[] { _ => Task.FromResult(Interlocked.Increment(ref started)) }, null, new CancellationToken(true));
            await t.Invoking(x => x).Should().ThrowAsync<OperationCanceledException>();
            started.Should().Be(0);
        });
        Add("GatherAsync(work)", "a `null` factory; a factory returning `null`", "`ArgumentNullException` (work) when reached; `InvalidOperationException`", async () =>
        {
            (await AsyncIter.GatherAsync(new Func<CancellationToken, Task<int>>[] { null! }).Invoking(x => x).Should().ThrowExactlyAsync<ArgumentNullException>()).Which.ParamName.Should().Be("work");
            await AsyncIter.GatherAsync(new Func<CancellationToken, Task<int>>[] { _ => null! }).Invoking(x => x).Should().ThrowAsync<InvalidOperationException>();
        });
        AddSync("AsCompleted(work, maxConcurrency, timeout)", "work `null`; maxConcurrency 0; timeout -2 ms", "`ArgumentNullException` / `ArgumentOutOfRangeException` (named) at the call", () =>
        {
            Param<ArgumentNullException>(() => AsyncIter.AsCompleted((IEnumerable<Func<CancellationToken, Task<int>>>)null!), "work");
            Param<ArgumentOutOfRangeException>(() => AsyncIter.AsCompleted(Array.Empty<Func<CancellationToken, Task<int>>>(), 0), "maxConcurrency");
            Param<ArgumentOutOfRangeException>(() => AsyncIter.AsCompleted(Array.Empty<Func<CancellationToken, Task<int>>>(), null, s_minus2), "timeout");
            Param<ArgumentNullException>(() => AsyncIter.AsCompleted((IEnumerable<Task<int>>)null!), "tasks");
        });
        AddSync("AsCompleted(work, maxConcurrency, timeout)", "timeout `TimeSpan.MaxValue` or 4294967295 ms", "`ArgumentOutOfRangeException` (timeout) at the call", () =>
        {
            Param<ArgumentOutOfRangeException>(() => AsyncIter.AsCompleted(Array.Empty<Func<CancellationToken, Task<int>>>(), null, TimeSpan.MaxValue), "timeout");
            Param<ArgumentOutOfRangeException>(() => AsyncIter.AsCompleted(Array.Empty<Task<int>>(), s_tooLong), "timeout");
        });
        Add("AsCompleted(work, maxConcurrency, timeout)", "timeout `TimeSpan.Zero`", "`TimeoutException` on enumeration; no work starts (the deadline has passed)", async () =>
        {
            var probe = new ConcurrencyProbe();
            var never = new TaskCompletionSource<bool>();
            Func<Task> act = async () => await AsyncIter.AsCompleted(new Func<CancellationToken, Task<int>>[] { ct => probe.RunAsync(1, never.Task, ct) }, null, TimeSpan.Zero).ToArrayAsync();
            await act.Should().ThrowAsync<TimeoutException>();
            probe.Started.Should().Be(0);
        });
        Add("Product(sources, repeat)", "`sources.Count * repeat` over 2,147,483,591, the longest array (`Array.MaxLength`; the length of each row)", "`ArgumentOutOfRangeException` (repeat) from the first `MoveNextAsync`, before any source is read", async () =>
        {
            var unused = Sources.From(new[] { 1 });
            Func<Task> act = async () => await AsyncIter.Product([unused, unused, unused, unused], repeat: 1 << 30).ToArrayAsync();
            (await act.Should().ThrowAsync<ArgumentOutOfRangeException>()).Which.ParamName.Should().Be("repeat");
            Func<Task> longerThanAnArray = async () => await AsyncIter.Product([unused], repeat: 0x7FFFFFC8).ToArrayAsync(); // one past
            (await longerThanAnArray.Should().ThrowAsync<ArgumentOutOfRangeException>()).Which.ParamName.Should().Be("repeat");
            unused.Enumerators.Should().Be(0);
        });
        AddSync("CombinationsWithReplacement(length)", "over 2,147,483,591 (`Array.MaxLength`; the length of each row)", "`ArgumentOutOfRangeException` (length) at the call", () =>
        {
            var one = Sources.From(new[] { 1 });
            Param<ArgumentOutOfRangeException>(() => one.CombinationsWithReplacement(0x7FFFFFC8), "length"); // one past
            Param<ArgumentOutOfRangeException>(() => one.CombinationsWithReplacement(int.MaxValue), "length");
            one.Enumerators.Should().Be(0);
        });
        AddSync("Batch(size)", "source `null`; size 0 or -1", "`ArgumentNullException` (source) / `ArgumentOutOfRangeException` (size) at the call", () =>
        {
            Param<ArgumentNullException>(() => AsyncIter.Batch<int>(null!, 1), "source");
            Param<ArgumentOutOfRangeException>(() => src.Batch(0), "size");
            Param<ArgumentOutOfRangeException>(() => src.Batch(-1), "size");
        });
        AddSync("Batch(maxSize, maxDelay)", "maxSize 0; maxDelay `TimeSpan.Zero`, -2 ms, `TimeSpan.MaxValue`, 4294967295 ms", "`ArgumentOutOfRangeException` (maxSize / maxDelay) at the call", () =>
        {
            Param<ArgumentOutOfRangeException>(() => src.Batch(0, TimeSpan.FromSeconds(1)), "maxSize");
            foreach (TimeSpan bad in new[] { TimeSpan.Zero, s_minus2, TimeSpan.MaxValue, s_tooLong })
            {
                Param<ArgumentOutOfRangeException>(() => src.Batch(2, bad), "maxDelay");
            }
        });
        Add("Batch(maxSize, maxDelay)", "`Timeout.InfiniteTimeSpan`; 4294967294 ms", "size-only batching; accepted", async () =>
        {
            (await src.Batch(2, Timeout.InfiniteTimeSpan).ToArrayAsync()).Should().HaveCount(2);
            (await src.Batch(2, s_longest).ToArrayAsync()).Should().HaveCount(2);
        });
        AddSync("Prefetch(capacity)", "source `null`; capacity 0 or -1", "`ArgumentNullException` (source) / `ArgumentOutOfRangeException` (capacity) at the call", () =>
        {
            Param<ArgumentNullException>(() => AsyncIter.Prefetch<int>(null!, 1), "source");
            Param<ArgumentOutOfRangeException>(() => src.Prefetch(0), "capacity");
            Param<ArgumentOutOfRangeException>(() => src.Prefetch(-1), "capacity");
        });
        AddSync("Tee(count, maxBuffer)", "source `null`; count -1; maxBuffer 0", "`ArgumentNullException` (source) / `ArgumentOutOfRangeException` (count / maxBuffer) at the call", () =>
        {
            Param<ArgumentNullException>(() => AsyncIter.Tee<int>(null!), "source");
            Param<ArgumentOutOfRangeException>(() => src.Tee(-1), "count");
            Param<ArgumentOutOfRangeException>(() => src.Tee(2, 0), "maxBuffer");
        });
        AddSync("Tee(count)", "0", "an empty array; the source is never enumerated", () =>
        {
            var s = Sources.Of(SourceMode.Synchronous, 1);
            s.Tee(0).Should().BeEmpty();
            s.Enumerators.Should().Be(0);
        });
        Add("Tee copy", "enumerated twice", "`InvalidOperationException` on the second `GetAsyncEnumerator`", async () =>
        {
            IAsyncEnumerable<int>[] copies = src.Tee(1);
            (await copies[0].ToArrayAsync()).Should().Equal(1, 2, 3);
            copies[0].Invoking(c => c.GetAsyncEnumerator()).Should().Throw<InvalidOperationException>();
        });
        Add("Map, MapUnordered, Merge, Prefetch, Batch(maxSize, maxDelay), Tee, AsCompleted", "pre-cancelled enumeration token", "`OperationCanceledException`; each source disposed once", async () =>
        {
            var token = new CancellationToken(true);
            var sources = new List<TrackingSource<int>>();
            TrackingSource<int> S()
            {
                TrackingSource<int> s = Sources.Of(SourceMode.Synchronous, 1, 2, 3);
                sources.Add(s);
                return s;
            }

            IAsyncEnumerable<int>[] ops =
            [
                S().Map(sel, 2), S().MapUnordered(sel, 2), AsyncIter.Merge(S(), S()), S().Prefetch(2),
                S().Batch(2, TimeSpan.FromSeconds(1)).Select(b => b[0]), S().Tee(1)[0],
                AsyncIter.AsCompleted(new Func<CancellationToken, Task<int>>[] { _ => Task.FromResult(1) }),
            ];
            foreach (IAsyncEnumerable<int> op in ops)
            {
                Func<Task> act = async () => await op.ToArrayAsync(token);
                await act.Should().ThrowAsync<OperationCanceledException>();
            }

            sources.Should().NotContain(s => s.Disposals != s.Enumerators);
        });

        return cases;
    }

    /// <summary>Every member with a timeout form, on a primitive in a state where the call must wait.</summary>
    private static IEnumerable<(string Member, Func<TimeSpan, Task> Wait, Func<Task> Usable)> TimedWaits()
    {
        var heldLock = new AsyncLock();
        heldLock.TryAcquire(out _);
        yield return ("AsyncLock.AcquireAsync(timeout)", t => heldLock.AcquireAsync(t).AsTask(), () => ReleaseAllAsync(heldLock));

        var emptySemaphore = new AsyncSemaphore(0);
        yield return ("AsyncSemaphore.AcquireAsync(timeout)", t => emptySemaphore.AcquireAsync(t).AsTask(), () => GrantAsync(emptySemaphore));

        var writeHeld = new AsyncReaderWriterLock();
        writeHeld.TryAcquireWrite(out _);
        yield return ("AsyncReaderWriterLock.AcquireReadAsync(timeout)", t => writeHeld.AcquireReadAsync(t).AsTask(), () => RwUsableAsync(writeHeld));

        var writeHeld2 = new AsyncReaderWriterLock();
        writeHeld2.TryAcquireWrite(out _);
        yield return ("AsyncReaderWriterLock.AcquireWriteAsync(timeout)", t => writeHeld2.AcquireWriteAsync(t).AsTask(), () => RwUsableAsync(writeHeld2));

        var ev = new AsyncEvent();
        yield return ("AsyncEvent.WaitAsync(timeout)", t => ev.WaitAsync(t).AsTask(), () => { ev.Set(); return ev.WaitAsync().AsTask(); });

        var result = new AsyncResult<int>();
        yield return ("AsyncResult.GetAsync(timeout)", t => result.GetAsync(t).AsTask(), () => { result.TrySet(1); return result.GetAsync().AsTask(); });

        var empty = new AsyncQueue<int>();
        yield return ("AsyncQueue.GetAsync(timeout)", t => empty.GetAsync(t).AsTask(), () => QueueUsableAsync(empty));

        var full = new AsyncLifoQueue<int>(1);
        full.TryPut(0);
        yield return ("AsyncLifoQueue.PutAsync(item, timeout)", t => full.PutAsync(1, t).AsTask(), () => QueueUsableAsync(full));

        var unfinished = new AsyncPriorityQueue<int>();
        unfinished.TryPut(0);
        yield return ("AsyncPriorityQueue.JoinAsync(timeout)", t => unfinished.JoinAsync(t).AsTask(), () => QueueUsableAsync(unfinished));

        var heldKey = new AsyncKeyedLock<string>(timeProvider: new FakeTimeProvider());
        heldKey.TryAcquire("k", out _);
        yield return ("AsyncKeyedLock.AcquireAsync(key, timeout)", t => heldKey.AcquireAsync("k", t).AsTask(), () => KeyedUsableAsync(heldKey, "k"));

        var conditionHeld = new AsyncCondition(timeProvider: new FakeTimeProvider());
        conditionHeld.AcquireAsync().AsTask().IsCompleted.Should().BeTrue();
        yield return ("AsyncCondition.WaitAsync(timeout)", t => conditionHeld.WaitAsync(t).AsTask(), () => ConditionUsableAsync(conditionHeld));

        var conditionHeld2 = new AsyncCondition(timeProvider: new FakeTimeProvider());
        conditionHeld2.AcquireAsync().AsTask().IsCompleted.Should().BeTrue();
        // Its predicate turns true before the usable check notifies it: with one that stays false, the woken waiter could
        // join the line again after the check let go of the lock, and leave a waiter behind.
        var done = new StrongBox<bool>();
        yield return ("AsyncCondition.WaitUntilAsync(predicate, timeout)", t => conditionHeld2.WaitUntilAsync(() => Volatile.Read(ref done.Value), t).AsTask(), () =>
        {
            Volatile.Write(ref done.Value, true);
            return ConditionUsableAsync(conditionHeld2);
        });
    }

    /// <summary>Every member with a token, with a way to succeed now and a way to make it wait (and then grant it).</summary>
    private static IEnumerable<(string Member, Func<CancellationToken, Task> SucceedsNow, Func<CancellationToken, (Task, Action)> MustWait)> TokenWaits()
    {
        var freeLock = new AsyncLock();
        yield return ("AsyncLock.AcquireAsync(cancellationToken)",
            ct => Release(freeLock.AcquireAsync(ct)),
            ct =>
            {
                var gate = new AsyncLock();
                gate.TryAcquire(out _);
                return (gate.AcquireAsync(ct).AsTask(), gate.Release);
            });

        var semaphore = new AsyncSemaphore(1);
        yield return ("AsyncSemaphore.AcquireAsync(cancellationToken)",
            ct => Release(semaphore.AcquireAsync(ct)),
            ct =>
            {
                var s = new AsyncSemaphore(0);
                return (s.AcquireAsync(ct).AsTask(), () => s.Release());
            });

        var rw = new AsyncReaderWriterLock();
        yield return ("AsyncReaderWriterLock.AcquireRead/WriteAsync(cancellationToken)",
            async ct =>
            {
                using (await rw.AcquireReadAsync(ct))
                {
                }

                using (await rw.AcquireWriteAsync(ct))
                {
                }
            },
            ct =>
            {
                var l = new AsyncReaderWriterLock();
                l.TryAcquireWrite(out _);
                return (l.AcquireReadAsync(ct).AsTask(), l.ReleaseWrite);
            });

        var setEvent = new AsyncEvent(initialState: true);
        yield return ("AsyncEvent.WaitAsync(cancellationToken)",
            ct => setEvent.WaitAsync(ct).AsTask(),
            ct =>
            {
                var e = new AsyncEvent();
                return (e.WaitAsync(ct).AsTask(), e.Set);
            });

        var setResult = new AsyncResult<int>();
        setResult.Set(1);
        yield return ("AsyncResult.GetAsync(cancellationToken)",
            ct => setResult.GetAsync(ct).AsTask(),
            ct =>
            {
                var r = new AsyncResult<int>();
                return (r.GetAsync(ct).AsTask(), () => r.Set(1));
            });

        var queue = new AsyncQueue<int>();
        yield return ("AsyncQueue.PutAsync(item, cancellationToken)",
            async ct =>
            {
                await queue.PutAsync(1, ct);
                queue.TryGet(out _).Should().BeTrue();
                queue.TaskDone();
                queue.Count.Should().Be(0);
            },
            ct =>
            {
                var q = new AsyncQueue<int>(1);
                q.TryPut(0);
                return (q.PutAsync(1, ct).AsTask(), () => q.TryGet(out _));
            });

        var withItem = new AsyncQueue<int>();
        withItem.TryPut(7);
        yield return ("AsyncQueue.GetAsync(cancellationToken)",
            async ct =>
            {
                (await withItem.GetAsync(ct)).Should().Be(7);
                withItem.TryPut(7).Should().BeTrue();
            },
            ct =>
            {
                var q = new AsyncQueue<int>();
                return (q.GetAsync(ct).AsTask(), () => q.TryPut(1));
            });

        var done = new AsyncQueue<int>();
        yield return ("AsyncQueue.JoinAsync(cancellationToken)",
            ct => done.JoinAsync(ct).AsTask(),
            ct =>
            {
                var q = new AsyncQueue<int>();
                q.TryPut(1);
                return (q.JoinAsync(ct).AsTask(), q.TaskDone);
            });

        var condition = new AsyncCondition();
        yield return ("AsyncCondition.AcquireAsync(cancellationToken)",
            ct => Release(condition.AcquireAsync(ct)),
            ct =>
            {
                var c = new AsyncCondition();
                c.AcquireAsync().AsTask().IsCompleted.Should().BeTrue();
                return (c.AcquireAsync(ct).AsTask(), c.Release);
            });

        var keyed = new AsyncKeyedLock<string>();
        yield return ("AsyncKeyedLock.AcquireAsync(key, cancellationToken)",
            ct => Release(keyed.AcquireAsync("k", ct)),
            ct =>
            {
                var k = new AsyncKeyedLock<string>();
                k.TryAcquire("k", out AsyncKeyedLock<string>.Releaser holder).Should().BeTrue();
                return (k.AcquireAsync("k", ct).AsTask(), holder.Dispose);
            });
    }

    private static async Task Release(ValueTask<AsyncLock.Releaser> acquire) => (await acquire).Dispose();

    private static async Task Release(ValueTask<AsyncSemaphore.Releaser> acquire) => (await acquire).Dispose();

    private static async Task Release(ValueTask<AsyncKeyedLock<string>.Releaser> acquire) => (await acquire).Dispose();

    private static async Task ReleaseAllAsync(AsyncLock gate)
    {
        // The waits left queued by the cases are granted one by one; a fresh waiter then gets the lock too.
        while (gate.Lines.Waiting > 0 || gate.IsLocked)
        {
            gate.Release();
            await Task.Yield();
        }

        using (await gate.AcquireAsync().AsTask().Bounded())
        {
        }
    }

    private static async Task GrantAsync(AsyncSemaphore semaphore)
    {
        while (semaphore.Lines.Waiting > 0)
        {
            semaphore.Release();
            await Task.Yield();
        }

        semaphore.Release();
        (await semaphore.AcquireAsync().AsTask().Bounded()).Dispose();
    }

    private static async Task RwUsableAsync(AsyncReaderWriterLock rw)
    {
        // The write lock is held by the setup; releasing it admits what waits. Nothing must be stuck afterwards.
        if (rw.IsWriteLockHeld)
        {
            rw.ReleaseWrite();
        }

        await Task.Yield();
        rw.Lines.Waiting.Should().BeLessThanOrEqualTo(1);
    }

    private static async Task KeyedUsableAsync(AsyncKeyedLock<string> keyed, string key)
    {
        // The hold of the setup and the waits left queued by the cases are released one by one; the key is then removed
        // (nothing is left of it), and a fresh waiter gets it too.
        while (keyed.Lines(key).Waiting > 0 || keyed.IsHeld(key))
        {
            keyed.Release(key);
            await Task.Yield();
        }

        keyed.KeyCount.Should().Be(0);
        (await keyed.AcquireAsync(key).AsTask().Bounded()).Dispose();
        keyed.KeyCount.Should().Be(0);
    }

    private static async Task ConditionUsableAsync(AsyncCondition condition)
    {
        // A waiter left by a case is woken and takes the lock back; the lock (held by the setup or by that waiter) is
        // then released until free, and a fresh caller gets it.
        condition.NotifyAll();
        while (condition.IsLocked)
        {
            condition.Release();
            await Task.Yield();
        }

        condition.Lines.Waiting.Should().Be(0);
        (await condition.AcquireAsync().AsTask().Bounded()).Dispose();
        condition.IsLocked.Should().BeFalse();
    }

    private static async Task QueueUsableAsync<T>(AsyncQueueBase<T> queue)
    {
        queue.Shutdown(immediate: true); // fails waiting putters and getters, drops the items (counted done)
        await Task.Yield();
        queue.Lines.Waiting.Should().Be(0);
        queue.UnfinishedTasks.Should().Be(0);
    }

    /// <summary>Throws from <c>GetHashCode</c> for "bad-hash", and from <c>Equals</c> when either key is "bad-equals".</summary>
    private sealed class ThrowingComparer : IEqualityComparer<string>
    {
        public bool Equals(string? x, string? y) =>
            x == "bad-equals" || y == "bad-equals" ? throw new ArithmeticException() : string.Equals(x, y, StringComparison.Ordinal);

        public int GetHashCode(string obj) => obj == "bad-hash" ? throw new ArithmeticException() : StringComparer.Ordinal.GetHashCode(obj);
    }

    private static void ShouldRejectTimeout(Func<Task> call)
    {
        Action act = () => call();
        act.Should().Throw<ArgumentOutOfRangeException>().Which.ParamName.Should().Be("timeout");
    }

    private static void Ctor(Func<object> create, string param) =>
        create.Should().Throw<ArgumentOutOfRangeException>().Which.ParamName.Should().Be(param);

    /// <summary>Enumerates <paramref name="sequence"/>; expects <see cref="ArgumentNullException"/> naming <paramref name="param"/>.</summary>
    private static async Task NullElementAsync(IAsyncEnumerable<int> sequence, string param)
    {
        Func<Task> act = async () => await sequence.ToArrayAsync();
        (await act.Should().ThrowExactlyAsync<ArgumentNullException>()).Which.ParamName.Should().Be(param);
    }

    private static void Param<TException>(Func<object> call, string param)
        where TException : ArgumentException =>
        call.Should().Throw<TException>().Which.ParamName.Should().Be(param);

    private static void Param<TException>(Action call, string param)
        where TException : ArgumentException =>
        call.Should().Throw<TException>().Which.ParamName.Should().Be(param);
}
