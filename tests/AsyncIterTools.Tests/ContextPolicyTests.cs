using System.Collections.Concurrent;

namespace AsyncIterTools.Tests;

/// <summary>
/// The context policy of the concurrent operators, counted under a single-threaded <see cref="SynchronizationContext"/>
/// (a UI thread's kind): the bookkeeping that records a completed call never posts to the caller's context; only the
/// consumer's own resumption after a wait does (and the test's await of the operator). Every call is parked on a gate of
/// its own, which the test opens from a thread without a context, so each completion runs inside that call and a
/// completion that posted would post once per call.
/// </summary>
public sealed class ContextPolicyTests
{
    /// <summary>Calls (or sources) parked on their gates: a per-completion post would show as this many posts.</summary>
    private const int Calls = 64;

    /// <summary>
    /// What the policy allows after the gates open: the consumer's resumption, which then takes the queued completions
    /// without waiting, and the resumption of each await layered on it (the test's; BatchTimed's <c>Select</c>): 2 or 3.
    /// Prefetch and BatchTimed read their source on the pool by design, and their read-ahead's end races the consumer,
    /// which may wait for it once or twice more: up to 7 seen. A completion that posted would add one post per call:
    /// <see cref="Calls"/> of them.
    /// </summary>
    private const int AllowedPosts = Calls / 4;

    public static TheoryData<string> Operators => new()
    {
        "Map", "MapUnordered", "Map(async source)", "MapUnordered(async source)", "GatherAsync", "GatherSettledAsync", "AsCompleted(work)", "AsCompleted(tasks)", "Merge", "Tee", "Prefetch", "BatchTimed",
        "Map(limiter)", "MapUnordered(limiter)", "GatherAsync(limiter)", "GatherSettledAsync(limiter)", "AsCompleted(limiter)",
    };

    [Theory, MemberData(nameof(Operators))]
    public async Task UnderASingleThreadedContext_CompletionsPostNothing_OnlyTheConsumersResumptionPosts(string op)
    {
        using var context = new SingleThreadedContext();
        (int posts, int results) = await context.Run(() => RunAsync(op, context)).WaitAsync(TestWork.Bound);

        results.Should().Be(Calls);
        posts.Should().BeLessThanOrEqualTo(AllowedPosts, "recording a completion must not post to the caller's context");
    }

    /// <summary>
    /// A source's members are user code: the operators that read the source on the consumer's side call every one of them
    /// on the caller's context, also when the source's move completes on a thread of its own (as an I/O completion does).
    /// </summary>
    [Theory]
    [InlineData("Tee")]
    [InlineData("BeforeAndAfter")]
    [InlineData("Map")]
    [InlineData("Merge")]
    public async Task UnderASingleThreadedContext_TheSourcesMembersRunOnTheContext(string op)
    {
        using var context = new SingleThreadedContext();
        var source = new MovesOffTheContextSource(3, context);
        List<int> items = await context.Run(async () =>
        {
            IAsyncEnumerable<int> sequence = op switch
            {
                "Tee" => source.Tee(2)[0],
                "BeforeAndAfter" => source.BeforeAndAfter(x => true).Before,
                "Map" => source.Map((x, _) => new ValueTask<int>(x), 2),
                _ => AsyncIter.Merge(source),
            };
            var seen = new List<int>();
            await foreach (int x in sequence)
            {
                seen.Add(x);
            }

            return seen;
        }).WaitAsync(TestWork.Bound);

        items.Should().Equal(1, 2, 3);
        source.CalledOffTheContext.Should().BeEmpty("a source's members are called where the consumer runs");
    }

    /// <summary>
    /// The read-ahead of Prefetch and the timed Batch belongs to no caller's context, also once a source has completed a
    /// move inline on the consumer's thread (an <c>IValueTaskSource</c> completed there runs the read-ahead there): its
    /// next awaits must not capture that thread's context, or every later move would be posted to it.
    /// </summary>
    [Theory]
    [InlineData("Prefetch")]
    [InlineData("BatchTimed")]
    public async Task UnderASingleThreadedContext_TheReadAheadResumedOnTheContextsThread_PostsNothingAfterwards(string op)
    {
        using var context = new SingleThreadedContext();
        var source = new CompletedByTheTestSource();
        (int posts, List<int> items) = await context.Run(async () =>
        {
            IAsyncEnumerable<int> sequence = op == "Prefetch"
                ? source.Prefetch(10)
                : source.Batch(10, Timeout.InfiniteTimeSpan).SelectMany(b => b.ToAsyncEnumerable());
            await using IAsyncEnumerator<int> e = sequence.GetAsyncEnumerator();
            ValueTask<bool> first = e.MoveNextAsync(); // starts the read-ahead on the pool; it awaits the first move
            await source.Awaited(1).WaitAsync(TestWork.Bound);

            source.CompleteMove(true); // on the context's thread: the read-ahead runs on here, up to its second move
            source.Awaited(2).IsCompleted.Should().BeTrue("the read-ahead ran inline up to its next move");

            int before = context.Posts;
            var completer = new Thread(() => source.CompleteMove(true)) { IsBackground = true }; // no context there
            completer.Start();
            completer.Join(TestWork.Bound).Should().BeTrue();
            int posted = context.Posts - before;

            await source.Awaited(3).WaitAsync(TestWork.Bound);
            completer = new Thread(() => source.CompleteMove(false)) { IsBackground = true };
            completer.Start();
            completer.Join(TestWork.Bound).Should().BeTrue();
            var read = new List<int>();
            for (bool more = await first; more; more = await e.MoveNextAsync())
            {
                read.Add(e.Current);
            }

            return (posted, read);
        }).WaitAsync(TestWork.Bound);

        items.Should().Equal(1, 2);
        posts.Should().Be(0, "the read-ahead's move completed off the context must not be posted to it");
    }

    /// <summary>
    /// Map and MapUnordered hand the source's pending move to their completion queue: its completion is bookkeeping,
    /// like a call's, and posts nothing to the caller's context when it comes off the context while the consumer is busy
    /// with an item (the consumer then finds it queued, without waiting).
    /// </summary>
    [Theory]
    [InlineData("Map")]
    [InlineData("MapUnordered")]
    public async Task UnderASingleThreadedContext_ASourceMoveCompletedOffTheContext_PostsNothing(string op)
    {
        using var context = new SingleThreadedContext();
        var source = new CompletedByTheTestSource();
        (int posts, List<int> items) = await context.Run(async () =>
        {
            Func<int, CancellationToken, ValueTask<int>> selector = (x, _) => new ValueTask<int>(x);
            await using IAsyncEnumerator<int> e = (op == "Map" ? source.Map(selector, 2) : source.MapUnordered(selector, 2)).GetAsyncEnumerator();
            ValueTask<bool> first = e.MoveNextAsync(); // the source's first move is pending
            await source.Awaited(1).WaitAsync(TestWork.Bound);
            source.CompleteMove(true);
            var read = new List<int>();
            (await first).Should().BeTrue();
            read.Add(e.Current);
            source.Awaited(2).IsCompleted.Should().BeTrue("the second move was asked for, and is pending, before item 1 was yielded");

            int before = context.Posts;
            var completer = new Thread(() => source.CompleteMove(true)) { IsBackground = true }; // no context there
            completer.Start();
            completer.Join(TestWork.Bound).Should().BeTrue();
            int posted = context.Posts - before;

            for (bool more = await e.MoveNextAsync(); more; more = await e.MoveNextAsync())
            {
                read.Add(e.Current);
                if (read.Count == 2)
                {
                    await source.Awaited(3).WaitAsync(TestWork.Bound);
                    completer = new Thread(() => source.CompleteMove(false)) { IsBackground = true };
                    completer.Start();
                    completer.Join(TestWork.Bound).Should().BeTrue();
                }
            }

            return (posted, read);
        }).WaitAsync(TestWork.Bound);

        items.Should().Equal(1, 2);
        posts.Should().Be(0, "the source's move completed off the context must not be posted to it");
    }

    /// <summary>A source whose moves complete only when the test calls <see cref="CompleteMove"/>, inline on the thread
    /// that calls it (its continuations are not forced to run asynchronously).</summary>
    private sealed class CompletedByTheTestSource : ManualMoves, IAsyncEnumerable<int>, IAsyncEnumerator<int>
    {
        private readonly TaskCompletionSource[] _awaited = Enumerable.Range(0, 4).Select(_ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).ToArray();
        private int _moves;

        public int Current { get; private set; }

        /// <summary>Completes once the <paramref name="move"/>-th move (from 1) is awaited.</summary>
        public Task Awaited(int move) => _awaited[move].Task;

        public void CompleteMove(bool more)
        {
            Current = more ? _moves : 0;
            Move.SetResult(more);
        }

        public IAsyncEnumerator<int> GetAsyncEnumerator(CancellationToken cancellationToken = default) => this;

        public ValueTask<bool> MoveNextAsync()
        {
            _moves++;
            return NextMove();
        }

        public ValueTask DisposeAsync() => default;

        protected override void Awaited() => _awaited[_moves].TrySetResult();
    }

    /// <summary>Moves of an enumerator as one reusable <see cref="System.Threading.Tasks.Sources.IValueTaskSource{TResult}"/>
    /// (no forced asynchronous continuations): what completes a move, and on which thread, is the subclass's.</summary>
    private abstract class ManualMoves : System.Threading.Tasks.Sources.IValueTaskSource<bool>
    {
        protected System.Threading.Tasks.Sources.ManualResetValueTaskSourceCore<bool> Move;

        public bool GetResult(short token) => Move.GetResult(token);

        public System.Threading.Tasks.Sources.ValueTaskSourceStatus GetStatus(short token) => Move.GetStatus(token);

        public void OnCompleted(Action<object?> continuation, object? state, short token, System.Threading.Tasks.Sources.ValueTaskSourceOnCompletedFlags flags)
        {
            Move.OnCompleted(continuation, state, token, flags);
            Awaited();
        }

        /// <summary>A move was awaited (its continuation is registered).</summary>
        protected abstract void Awaited();

        protected ValueTask<bool> NextMove()
        {
            Move.Reset();
            return new ValueTask<bool>(this, Move.Version);
        }
    }

    /// <summary>Runs <paramref name="op"/> on the context's thread; returns the posts after the gates opened and the results read.</summary>
    private static async Task<(int Posts, int Results)> RunAsync(string op, SingleThreadedContext context)
    {
        // Every call (and a gated source) parks on a gate of its own.
        var gates = new Gates(Calls + 1);
        Func<CancellationToken, Task<int>> parkedWork = _ => gates.Next();
        IEnumerable<Func<CancellationToken, Task<int>>> work = Enumerable.Repeat(parkedWork, Calls);
        Func<int, CancellationToken, ValueTask<int>> parked = (_, _) => new ValueTask<int>(gates.Next());

        // With a limiter that grants at once: the call runs after the lease, and what follows it is bookkeeping too.
        using var limiter = new CountingLimiter();
        if (op is "GatherAsync" or "GatherSettledAsync" or "GatherAsync(limiter)" or "GatherSettledAsync(limiter)")
        {
            Task<int> gathered = op switch
            {
                "GatherAsync" => AsyncIter.GatherAsync(work, Calls).ContinueWith(t => t.Result.Length, TaskScheduler.Default),
                "GatherAsync(limiter)" => AsyncIter.GatherAsync(work, Calls, limiter).ContinueWith(t => t.Result.Length, TaskScheduler.Default),
                "GatherSettledAsync" => AsyncIter.GatherSettledAsync(work, Calls).ContinueWith(t => t.Result.Count(o => o.IsSuccess), TaskScheduler.Default),
                _ => AsyncIter.GatherSettledAsync(work, Calls, limiter).ContinueWith(t => t.Result.Count(o => o.IsSuccess), TaskScheduler.Default),
            };
            int before = context.Posts;
            gates.Open();
            int gatheredCount = await gathered;
            return (context.Posts - before, gatheredCount);
        }

        var gated = new GatedSource(gates.Next(), Calls);
        IAsyncEnumerable<int> sequence = op switch
        {
            "Map" => Sources.From(Enumerable.Range(0, Calls)).Map(parked, Calls),
            "MapUnordered" => Sources.From(Enumerable.Range(0, Calls)).MapUnordered(parked, Calls),
            // The source's first move waits for the gate: the operators hand it to their completion queue, whose signal
            // must not post either.
            "Map(async source)" => gated.Map(parked, Calls),
            "MapUnordered(async source)" => gated.MapUnordered(parked, Calls),
            "AsCompleted(work)" => AsyncIter.AsCompleted(work, Calls),
            "Map(limiter)" => Sources.From(Enumerable.Range(0, Calls)).Map(parked, Calls, limiter),
            "MapUnordered(limiter)" => Sources.From(Enumerable.Range(0, Calls)).MapUnordered(parked, Calls, limiter),
            "AsCompleted(limiter)" => AsyncIter.AsCompleted(work, Calls, limiter),
            "AsCompleted(tasks)" => AsyncIter.AsCompleted(Enumerable.Range(0, Calls).Select(_ => gates.Next())),
            "Merge" => AsyncIter.Merge(Enumerable.Range(0, Calls).Select(_ => new GatedSource(gates.Next(), 1)).ToArray()),
            "Tee" => gated.Tee(2)[0],
            "Prefetch" => gated.Prefetch(Calls),
            "BatchTimed" => gated.Batch(Calls, Timeout.InfiniteTimeSpan).Select(b => b.Length),
            _ => throw new ArgumentOutOfRangeException(nameof(op)),
        };

        await using IAsyncEnumerator<int> e = sequence.GetAsyncEnumerator();
        ValueTask<bool> first = e.MoveNextAsync();
        if (op is "Prefetch" or "BatchTimed" or "Map(async source)" or "MapUnordered(async source)")
        {
            // Open the gates once the source's move is parked on it (Prefetch and BatchTimed read the source on the thread
            // pool by design).
            await gated.Parked;
        }

        int start = context.Posts;
        gates.Open();
        int results = 0;
        if (await first)
        {
            // BatchTimed yields one batch of every item, as its length; the others one item at a time.
            results += op == "BatchTimed" ? e.Current : 1;
            while (await e.MoveNextAsync())
            {
                results += op == "BatchTimed" ? e.Current : 1;
            }
        }

        return (context.Posts - start, results);
    }

    /// <summary>
    /// One gate per parked call (synchronous continuations), opened together by <see cref="Open"/>. One gate per call, not
    /// one for all: a task with several awaits waiting runs only the first inline and queues the rest to the pool, where
    /// they would race the consumer, which would then wait, and be posted to, a varying number of times.
    /// </summary>
    private sealed class Gates(int count)
    {
        private readonly TaskCompletionSource<int>[] _gates = Enumerable.Range(0, count).Select(_ => new TaskCompletionSource<int>()).ToArray();
        private int _taken = -1;

        /// <summary>The next gate, not taken before.</summary>
        public Task<int> Next() => _gates[Interlocked.Increment(ref _taken)].Task;

        /// <summary>
        /// Opens every gate from a thread of its own (no context) and blocks this, the context's, thread until every
        /// completion that runs inline has run: the consumer, resumed on this thread, then finds them all queued and never
        /// waits again. (On a thread with a context a <c>ConfigureAwait(false)</c> continuation is never inlined: it would
        /// go to the pool and race the consumer. A dedicated thread, unlike a task, cannot be inlined into the wait.)
        /// </summary>
        public void Open()
        {
            var opener = new Thread(() =>
            {
                foreach (TaskCompletionSource<int> gate in _gates)
                {
                    gate.SetResult(1);
                }
            })
            { IsBackground = true };
            opener.Start();
            opener.Join(TestWork.Bound).Should().BeTrue();
        }
    }

    /// <summary>A source whose every move completes on a thread of its own once awaited (as an I/O completion does), and
    /// which records each member called off <paramref name="context"/>.</summary>
    private sealed class MovesOffTheContextSource(int count, SynchronizationContext context) : IAsyncEnumerable<int>
    {
        public ConcurrentQueue<string> CalledOffTheContext { get; } = new();

        public IAsyncEnumerator<int> GetAsyncEnumerator(CancellationToken cancellationToken = default)
        {
            Record(nameof(GetAsyncEnumerator));
            return new Enumerator(this, count);
        }

        private void Record(string member)
        {
            if (SynchronizationContext.Current != context)
            {
                CalledOffTheContext.Enqueue(member);
            }
        }

        private sealed class Enumerator(MovesOffTheContextSource owner, int count) : ManualMoves, IAsyncEnumerator<int>
        {
            private int _position;

            public int Current
            {
                get
                {
                    owner.Record(nameof(Current));
                    return _position;
                }
            }

            public ValueTask<bool> MoveNextAsync()
            {
                owner.Record(nameof(MoveNextAsync));
                if (_position == count)
                {
                    return new ValueTask<bool>(false);
                }

                _position++;
                return NextMove();
            }

            public ValueTask DisposeAsync()
            {
                owner.Record(nameof(DisposeAsync));
                return default;
            }

            // Completes once awaited, from a thread of its own: never before the awaiter registered.
            protected override void Awaited() => new Thread(() => Move.SetResult(true)) { IsBackground = true }.Start();
        }
    }

    /// <summary>A source whose first <c>MoveNextAsync</c> waits for the gate; the rest complete synchronously.</summary>
    private sealed class GatedSource(Task gate, int count) : IAsyncEnumerable<int>
    {
        private readonly TaskCompletionSource _parked = new(TaskCreationOptions.RunContinuationsAsynchronously);

        /// <summary>Completes when a <c>MoveNextAsync</c> is waiting for the gate.</summary>
        public Task Parked => _parked.Task;

        public IAsyncEnumerator<int> GetAsyncEnumerator(CancellationToken cancellationToken = default) => new Enumerator(gate, count, _parked);

        private sealed class Enumerator(Task gate, int count, TaskCompletionSource parked) : IAsyncEnumerator<int>
        {
            private int _produced;

            public int Current { get; private set; }

            public ValueTask<bool> MoveNextAsync()
            {
                if (_produced == count)
                {
                    return new ValueTask<bool>(false);
                }

                Current = ++_produced;
                if (_produced > 1 || gate.IsCompleted)
                {
                    return new ValueTask<bool>(true);
                }

                Task<bool> waiting = gate.ContinueWith(_ => true, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
                parked.TrySetResult();
                return new ValueTask<bool>(waiting);
            }

            public ValueTask DisposeAsync() => default;
        }
    }

    /// <summary>A single-threaded <see cref="SynchronizationContext"/> (a UI thread's kind) that counts its posts.</summary>
    internal sealed class SingleThreadedContext : SynchronizationContext, IDisposable
    {
        private readonly BlockingCollection<(SendOrPostCallback Callback, object? State)> _queue = new();
        private int _posts;

        public SingleThreadedContext()
        {
            var thread = new Thread(() =>
            {
                SetSynchronizationContext(this);
                foreach ((SendOrPostCallback callback, object? state) in _queue.GetConsumingEnumerable())
                {
                    callback(state);
                }
            })
            { IsBackground = true, Name = "single-threaded context" };
            thread.Start();
        }

        public int Posts => Volatile.Read(ref _posts);

        public override void Post(SendOrPostCallback d, object? state)
        {
            Interlocked.Increment(ref _posts);
            _queue.Add((d, state));
        }

        public override void Send(SendOrPostCallback d, object? state) => throw new NotSupportedException();

        /// <summary>Runs <paramref name="body"/> on the context's thread.</summary>
        public Task<T> Run<T>(Func<Task<T>> body)
        {
            var result = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
            _queue.Add((
                async _ =>
                {
                    try
                    {
                        result.SetResult(await body());
                    }
                    catch (Exception ex)
                    {
                        result.SetException(ex);
                    }
                },
                null));
            return result.Task;
        }

        public void Dispose() => _queue.CompleteAdding();
    }

    /// <summary>
    /// docs/asynciter.md, Shared rules: "The concurrent operators' own bookkeeping (recording that a call completed) never
    /// posts to your SynchronizationContext". Every call's lease is IAsyncDisposable, its release parked on a gate, and
    /// refused (no RetryAfter) or granted: the calls' ends, their leases going back, must not post once per call.
    /// </summary>
    [Theory]
    [InlineData("GatherAsync(limiter)", false)]
    [InlineData("AsCompleted(limiter)", false)]
    [InlineData("GatherAsync(limiter)", true)]
    [InlineData("AsCompleted(limiter)", true)]
    public async Task UnderASingleThreadedContext_LeasesGoingBackAsynchronously_PostNothingPerCall(string op, bool granted)
    {
        using var context = new SingleThreadedContext();
        (int posts, Exception? failure) = await context.Run(() => RunGatedReleaseAsync(op, granted)).WaitAsync(TestWork.Bound);

        if (granted)
        {
            failure.Should().BeNull();
        }
        else
        {
            failure.Should().BeOfType<InvalidOperationException>();
        }

        posts.Should().BeLessThanOrEqualTo(AllowedPosts, "recording a completion must not post to the caller's context");
    }

    private static async Task<(int Posts, Exception? Failure)> RunGatedReleaseAsync(string op, bool granted)
    {
        var context = (SingleThreadedContext)SynchronizationContext.Current!;
        var gates = new Gates(Calls); // one per lease
        using var limiter = new GatedReleaseLimiter(gates, granted);
        IEnumerable<Func<CancellationToken, Task<int>>> work = Enumerable.Repeat<Func<CancellationToken, Task<int>>>(_ => Task.FromResult(1), Calls);
        Task run = op == "GatherAsync(limiter)"
            ? AsyncIter.GatherAsync(work, Calls, limiter)
            : AsyncIter.AsCompleted(work, Calls, limiter).ToListAsync().AsTask();
        int before = context.Posts;
        gates.Open();
        Exception? failure = null;
        try
        {
            await run;
        }
        catch (Exception ex)
        {
            failure = ex;
        }

        return (context.Posts - before, failure);
    }

    /// <summary>
    /// docs/asynciter.md, Shared rules: bookkeeping never posts to your context, also for a call that failed:
    /// <c>GatherSettledAsync</c> goes on after each failure, and every failed call's lease goes back asynchronously
    /// (parked on a gate of its own). Giving those leases back must not post once per call.
    /// </summary>
    [Fact]
    public async Task UnderASingleThreadedContext_LeasesOfFailedCallsGoingBackAsynchronously_PostNothingPerCall()
    {
        using var context = new SingleThreadedContext();
        (int posts, Outcome<int>[] outcomes) = await context.Run(async () =>
        {
            var gates = new Gates(Calls); // one per lease
            using var limiter = new GatedReleaseLimiter(gates, grants: true);
            var failure = new FormatException("the call's failure");
            IEnumerable<Func<CancellationToken, Task<int>>> work = Enumerable.Repeat<Func<CancellationToken, Task<int>>>(_ => Task.FromException<int>(failure), Calls);
            Task<Outcome<int>[]> run = AsyncIter.GatherSettledAsync(work, Calls, limiter);
            int before = context.Posts;
            gates.Open();
            Outcome<int>[] outcomes = await run;
            return (context.Posts - before, outcomes);
        }).WaitAsync(TestWork.Bound);

        outcomes.Should().HaveCount(Calls).And.OnlyContain(o => o.Exception is FormatException);
        posts.Should().BeLessThanOrEqualTo(AllowedPosts, "giving back a failed call's lease must not post to the caller's context");
    }

    /// <summary>
    /// docs/asynciter.md, Shared rules: bookkeeping never posts to your context, also under a lease that can be lost
    /// (<c>LEASE_LOST</c> metadata, whose token is linked into the call's): every call is parked on a gate of its own, and
    /// what follows a call's end must not post once per call.
    /// </summary>
    [Theory]
    [InlineData("GatherAsync(limiter)")]
    [InlineData("AsCompleted(limiter)")]
    public async Task UnderASingleThreadedContext_CallsUnderLeasesThatCanBeLost_PostNothingPerCall(string op)
    {
        using var context = new SingleThreadedContext();
        using var lost = new CancellationTokenSource(); // never cancelled: no lease is lost
        (int posts, int sum) = await context.Run(async () =>
        {
            var gates = new Gates(Calls); // one per call
            using var limiter = new CountingLimiter { LeaseLost = lost.Token };
            IEnumerable<Func<CancellationToken, Task<int>>> work = Enumerable.Repeat<Func<CancellationToken, Task<int>>>(_ => gates.Next(), Calls);
            Task<int> run = op == "GatherAsync(limiter)"
                ? AsyncIter.GatherAsync(work, Calls, limiter).ContinueWith(t => t.Result.Sum(), TaskScheduler.Default)
                : AsyncIter.AsCompleted(work, Calls, limiter).SumAsync().AsTask();
            int before = context.Posts;
            gates.Open();
            int sum = await run;
            limiter.ShouldHaveReturnedEveryLease();
            return (context.Posts - before, sum);
        }).WaitAsync(TestWork.Bound);

        sum.Should().Be(Calls);
        posts.Should().BeLessThanOrEqualTo(AllowedPosts, "recording a completion must not post to the caller's context");
    }

    /// <summary>
    /// docs/asynciter.md, AsCompleted: once the deadline passes (or the caller cancels), running work is cancelled and
    /// awaited, then the enumeration throws. Work is user code and runs on the caller's context (docs/architecture.md,
    /// "Context policy"): under a single-threaded context, work that resumes there once cancelled must be able to end,
    /// so the consumer awaits it without holding that context's thread, and the enumeration ends as the timeout (or the
    /// cancellation).
    /// </summary>
    [Theory]
    [InlineData("deadline")]
    [InlineData("cancellation")]
    public async Task UnderASingleThreadedContext_AsCompletedStopped_AwaitsWorkThatEndsOnTheContext_ThenThrows(string howItEnds)
    {
        using var context = new SingleThreadedContext();
        var time = new CountingTimeProvider();
        using var cts = new CancellationTokenSource();
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var finish = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var ended = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        IEnumerable<Func<CancellationToken, Task<int>>> work =
        [
            async ct =>
            {
                // Signalled from the context's queue: by then the consumer, which started this work, waits for it.
                SynchronizationContext.Current!.Post(_ => started.TrySetResult(), null);
                try
                {
                    await new TaskCompletionSource().Task.WaitAsync(ct); // resumes on the context once cancelled
                    return 1;
                }
                catch (OperationCanceledException)
                {
                    await finish.Task; // and again, to end
                    throw;
                }
                finally
                {
                    ended.TrySetResult();
                }
            },
        ];

        Task<Exception?> run = context.Run(async () =>
        {
            try
            {
                await foreach (int _ in AsyncIter.AsCompleted(work, 1, TimeSpan.FromSeconds(10), time).WithCancellation(cts.Token))
                {
                }

                return null;
            }
            catch (Exception ex)
            {
                return ex;
            }
        });

        await started.Task.WaitAsync(TestWork.Bound);
        int before = context.Posts;
        if (howItEnds == "deadline")
        {
            time.Advance(TimeSpan.FromSeconds(10));
        }
        else
        {
            await cts.CancelAsync();
        }

        // The work resumed (cancelled) on the context, and, at the deadline, so did the consumer (its wait for a
        // completion ends there): those posts are in; then the work's last resumption, which needs the context's thread.
        int resumptions = howItEnds == "deadline" ? 2 : 1;
        SpinWait.SpinUntil(() => context.Posts >= before + resumptions, TestWork.Bound).Should().BeTrue();
        finish.SetResult();

        Exception? failure = await run.WaitAsync(TestWork.Bound);
        ended.Task.IsCompleted.Should().BeTrue("the work is awaited before the enumeration throws");
        if (howItEnds == "deadline")
        {
            failure.Should().BeOfType<TimeoutException>();
        }
        else
        {
            failure.Should().BeAssignableTo<OperationCanceledException>();
        }
    }

    /// <summary>
    /// docs/asynciter.md, Shared rules: under a UI context the only posts are the consumer's own resumptions, once per
    /// time it waits. After the caller cancels <c>AsCompleted</c>, the consumer waits once for the cancelled work: work
    /// that then resumes on the context <see cref="Calls"/> times before it ends must not find the consumer resuming
    /// alongside it (a consumer that kept polling would post about once per post of the work's).
    /// </summary>
    [Fact]
    public async Task UnderASingleThreadedContext_AsCompletedCancelled_WaitsOnceForTheCancelledWork_NotOncePerPostOfIt()
    {
        using var context = new SingleThreadedContext();
        using var cts = new CancellationTokenSource();
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        IEnumerable<Func<CancellationToken, Task<int>>> work =
        [
            async ct =>
            {
                started.TrySetResult();
                try
                {
                    await new TaskCompletionSource().Task.WaitAsync(ct); // resumes on the context once cancelled
                }
                catch (OperationCanceledException)
                {
                    for (int i = 0; i < Calls; i++)
                    {
                        await Task.Yield(); // a post of the work's own
                    }

                    throw;
                }

                return 1;
            },
        ];

        int before = context.Posts;
        Task<Exception?> run = context.Run(async () =>
        {
            try
            {
                await foreach (int _ in AsyncIter.AsCompleted(work, 1).WithCancellation(cts.Token))
                {
                }

                return null;
            }
            catch (Exception ex)
            {
                return ex;
            }
        });

        await started.Task.WaitAsync(TestWork.Bound);
        await cts.CancelAsync();
        Exception? failure = await run.WaitAsync(TestWork.Bound);
        failure.Should().BeAssignableTo<OperationCanceledException>();
        (context.Posts - before).Should().BeLessThanOrEqualTo(Calls + AllowedPosts, "the consumer waits for the cancelled work, it does not poll for it");
    }

    /// <summary>
    /// docs/asynciter.md, Shared rules: bookkeeping never posts to your context, also for calls held back by a failure
    /// (docs/asynciter.md, Limiters: "Granted after the operator ... failed: disposed at once; the call does not start,
    /// also while a failed call waits to be taken"). <c>GatherAsync</c>'s first call fails while its lease goes back;
    /// the others' leases are granted then, on the context, and each goes back (asynchronously, each parked on a gate of
    /// its own, or at once) while they wait for the failure to be posted. None of that may post once per call.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task UnderASingleThreadedContext_CallsHeldBackByAFailure_PostNothingPerCall(bool asyncRelease)
    {
        using var context = new SingleThreadedContext();
        var failure = new FormatException("the first call's failure");
        var releaseFirst = new TaskCompletionSource(); // continuations inline: the failing call ends inside SetResult
        var grants = Enumerable.Range(0, Calls).Select(_ => new TaskCompletionSource<System.Threading.RateLimiting.RateLimitLease>()).ToArray(); // inline
        var releases = new Gates(Calls); // one per held-back lease
        int ran = 0;
        using var limiter = new ScriptedGrantLimiter(n => n == 0
            ? new(new GatedReleaseLease(releaseFirst.Task, granted: true))
            : new(grants[n - 1].Task));
        IEnumerable<Func<CancellationToken, Task<int>>> work = Enumerable.Range(0, Calls + 1).Select<int, Func<CancellationToken, Task<int>>>(i => i == 0
            ? _ => Task.FromException<int>(failure)
            : _ =>
            {
                Interlocked.Increment(ref ran);
                return Task.FromResult(i);
            });

        (int posts, Exception? thrown) = await context.Run(async () =>
        {
            Task<int[]> gathered = AsyncIter.GatherAsync(work, Calls + 1, limiter);
            foreach (TaskCompletionSource<System.Threading.RateLimiting.RateLimitLease> grant in grants)
            {
                grant.SetResult(new GatedReleaseLease(asyncRelease ? releases.Next() : Task.CompletedTask, granted: true)); // granted on the context
            }

            await Task.Yield(); // whatever the grants queued on the context has run
            int before = context.Posts;
            if (asyncRelease)
            {
                releases.Open();
            }

            var opener = new Thread(releaseFirst.SetResult) { IsBackground = true }; // off the context: the failure is posted there
            opener.Start();
            opener.Join(TestWork.Bound).Should().BeTrue();
            Exception? thrown = null;
            try
            {
                await gathered;
            }
            catch (Exception ex)
            {
                thrown = ex;
            }

            return (context.Posts - before, thrown);
        }).WaitAsync(TestWork.Bound);

        thrown.Should().BeSameAs(failure);
        ran.Should().Be(0, "no call starts after another failed");
        posts.Should().BeLessThanOrEqualTo(AllowedPosts, "a held-back call's lease going back must not post to the caller's context");
    }

    /// <summary>Hands out, for request n (0 for the first), the lease <c>script</c> returns.</summary>
    private sealed class ScriptedGrantLimiter(Func<int, ValueTask<System.Threading.RateLimiting.RateLimitLease>> script) : System.Threading.RateLimiting.RateLimiter
    {
        private int _requests = -1;

        public override TimeSpan? IdleDuration => null;

        public override System.Threading.RateLimiting.RateLimiterStatistics? GetStatistics() => null;

        protected override System.Threading.RateLimiting.RateLimitLease AttemptAcquireCore(int permitCount) => throw new NotSupportedException();

        protected override ValueTask<System.Threading.RateLimiting.RateLimitLease> AcquireAsyncCore(int permitCount, CancellationToken cancellationToken) =>
            script(Interlocked.Increment(ref _requests));
    }

    /// <summary>Grants every lease, or refuses it without a RetryAfter; each lease is IAsyncDisposable, its release waiting
    /// for a gate of its own.</summary>
    private sealed class GatedReleaseLimiter(Gates gates, bool grants) : System.Threading.RateLimiting.RateLimiter
    {
        public override TimeSpan? IdleDuration => null;

        public override System.Threading.RateLimiting.RateLimiterStatistics? GetStatistics() => null;

        protected override System.Threading.RateLimiting.RateLimitLease AttemptAcquireCore(int permitCount) => throw new NotSupportedException();

        protected override ValueTask<System.Threading.RateLimiting.RateLimitLease> AcquireAsyncCore(int permitCount, CancellationToken cancellationToken) =>
            new(new GatedReleaseLease(gates.Next(), grants));
    }

    private sealed class GatedReleaseLease(Task gate, bool granted) : System.Threading.RateLimiting.RateLimitLease, IAsyncDisposable
    {
        public override bool IsAcquired => granted;

        public override IEnumerable<string> MetadataNames => [];

        public override bool TryGetMetadata(string metadataName, out object? metadata)
        {
            metadata = null;
            return false;
        }

        public ValueTask DisposeAsync() => new(gate);
    }
}
