using System.Runtime.CompilerServices;
using System.Threading.RateLimiting;

namespace AsyncIterTools.Tests;

/// <summary>
/// Examples shown in docs/asynciter.md that no single test has in a readable form, compiled and run. The docs are
/// refreshed from the <c>// doc:</c> regions (see AsyncPrimitives.Tests/DocSnippetsTests.cs). Each example runs under
/// <see cref="TestWork.Bound"/>, outside its region, so a regression fails instead of hanging.
/// </summary>
public sealed class DocExamplesTests
{
    private static Task Bounded(Func<Task> example) => example().WaitAsync(TestWork.Bound);

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public Task Combinatorics_Example(SourceMode mode) => Bounded(async () =>
    {
        // doc: asynciter-combinatorics
        // [''.join(p) for p in permutations('ABCD', 2)]
        (await Sources.From("ABCD", mode).Permutations(2).Select(p => new string(p)).ToArrayAsync()).Should().Equal(
            "AB", "AC", "AD", "BA", "BC", "BD", "CA", "CB", "CD", "DA", "DB", "DC");
        // [''.join(c) for c in combinations('ABCD', 2)] == ['AB', 'AC', 'AD', 'BC', 'BD', 'CD']
        (await Sources.From("ABCD", mode).Combinations(2).Select(c => new string(c)).ToArrayAsync())
            .Should().Equal("AB", "AC", "AD", "BC", "BD", "CD");
        // [''.join(c) for c in combinations_with_replacement('ABC', 2)] == ['AA', 'AB', 'AC', 'BB', 'BC', 'CC']
        (await Sources.From("ABC", mode).CombinationsWithReplacement(2).Select(c => new string(c)).ToArrayAsync())
            .Should().Equal("AA", "AB", "AC", "BB", "BC", "CC");
        // end doc
    });

    [Fact]
    public Task GatherAsync_Example() => Bounded(async () =>
    {
        // doc: asynciter-gather
        var probe = new ConcurrencyProbe(max: 4);
        var work = Enumerable.Range(0, 30).Select(i => (Func<CancellationToken, Task<int>>)(ct => probe.RunAsync(i, probe.ReachedMax, ct)));

        int[] results = await AsyncIter.GatherAsync(work, 4);

        results.Should().Equal(Enumerable.Range(0, 30));
        probe.Peak.Should().Be(4);
        // end doc
    });

    [Fact]
    public Task Limiter_SharedByTwoOperators_Example() => Bounded(async () =>
    {
        // doc: asynciter-limiter
        // One ConcurrencyLimiter shared by two pipelines: 3 calls at once between them, whatever each one's maxConcurrency.
        using var partnerApi = new ConcurrencyLimiter(new ConcurrencyLimiterOptions { PermitLimit = 3, QueueLimit = 1_000 });
        var probe = new ConcurrencyProbe();
        async Task<int> CallAsync(int id, CancellationToken ct)
        {
            probe.Enter(id);
            await Task.Yield();
            probe.Exit();
            return id;
        }

        Task<List<int>> mapped = AsyncEnumerable.Range(0, 100)
            .Map(async (id, ct) => await CallAsync(id, ct), maxConcurrency: 8, partnerApi)
            .ToListAsync().AsTask();
        Task<int[]> gathered = AsyncIter.GatherAsync(
            Enumerable.Range(100, 100).Select(id => (Func<CancellationToken, Task<int>>)(ct => CallAsync(id, ct))),
            maxConcurrency: 8,
            partnerApi);
        await Task.WhenAll(mapped, gathered);

        (await mapped).Should().Equal(Enumerable.Range(0, 100));
        (await gathered).Should().Equal(Enumerable.Range(100, 100));
        probe.Peak.Should().BeLessThanOrEqualTo(3);
        partnerApi.GetStatistics()!.CurrentAvailablePermits.Should().Be(3); // every lease was given back
        // end doc
    });

    [Fact]
    public Task AsCompleted_Timeout_Example() => Bounded(async () =>
    {
        // doc: asynciter-ascompleted-timeout
        var time = new FakeTimeProvider();
        var second = new TaskCompletionSource<int>();
        var work = new Func<CancellationToken, Task<int>>[]
        {
            _ => Task.FromResult(1),
            _ => second.Task,
            async ct => { await Task.Delay(Timeout.InfiniteTimeSpan, ct); return 3; },   // never finishes by itself
        };

        await using IAsyncEnumerator<int> e = AsyncIter.AsCompleted(work, null, TimeSpan.FromSeconds(10), time).GetAsyncEnumerator();
        (await e.MoveNextAsync()).Should().BeTrue();   // 1, at once
        time.Advance(TimeSpan.FromSeconds(6));
        second.SetResult(2);
        (await e.MoveNextAsync()).Should().BeTrue();   // 2, six seconds in: the deadline does not restart
        ValueTask<bool> move = e.MoveNextAsync();
        time.Advance(TimeSpan.FromSeconds(4));         // ten seconds since the first MoveNextAsync
        await FluentActions.Awaiting(() => move.AsTask()).Should().ThrowAsync<TimeoutException>();
        // end doc
    });

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public Task Map_BackPressure_Example(SourceMode mode) => Bounded(async () =>
    {
        // doc: asynciter-map
        static async ValueTask<int> YieldThenDouble(int x, CancellationToken ct)
        {
            await Task.Yield();
            return x * 2;
        }

        var source = Sources.From(Enumerable.Range(0, 1_000), mode);
        var taken = new List<int>();
        await foreach (int x in source.Map(YieldThenDouble, 4))
        {
            taken.Add(x);
            if (taken.Count == 10)
            {
                break;
            }
        }

        taken.Should().Equal(0, 2, 4, 6, 8, 10, 12, 14, 16, 18);
        source.Produced.Should().BeLessThanOrEqualTo(14);   // 10 taken + at most 4 in flight
        source.Disposals.Should().Be(1);
        // end doc
    });

    [Fact]
    public Task Batch_Deadline_Example() => Bounded(async () =>
    {
        // doc: asynciter-batch
        var time = new CountingTimeProvider();
        var stalled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);

        async IAsyncEnumerable<int> OneItemThenStall([EnumeratorCancellation] CancellationToken ct = default)
        {
            yield return 1;
            stalled.SetResult();
            await Task.Delay(Timeout.InfiniteTimeSpan, ct);
        }

        await using IAsyncEnumerator<int[]> e = OneItemThenStall().Batch(10, TimeSpan.FromSeconds(5), time).GetAsyncEnumerator();
        ValueTask<bool> move = e.MoveNextAsync();
        await stalled.Task;                      // 1 was read; the source is stuck
        await time.WaitForArmedTimersAsync();    // the batch's deadline timer is armed
        time.Advance(TimeSpan.FromSeconds(4));
        move.IsCompleted.Should().BeFalse();

        time.Advance(TimeSpan.FromSeconds(1));   // five seconds after the first item: the partial batch is due
        (await move).Should().BeTrue();
        e.Current.Should().Equal(1);
        // end doc
    });

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public Task Tee_Example(SourceMode mode) => Bounded(async () =>
    {
        // doc: asynciter-tee
        var source = Sources.From(Enumerable.Range(0, 50), mode);
        IAsyncEnumerable<int>[] copies = source.Tee();

        (await copies[1].ToListAsync()).Should().Equal(Enumerable.Range(0, 50));
        (await copies[0].ToListAsync()).Should().Equal(Enumerable.Range(0, 50));
        source.Enumerators.Should().Be(1);
        // end doc
    });

    private sealed record Response(string Url);

    [Fact]
    public Task PackageReadme_Example() => Bounded(async () =>
    {
        IAsyncEnumerable<string> urls = AsyncEnumerable.Range(0, 250).Select(i => $"https://example.com/{i}");
        var probe = new ConcurrencyProbe(max: 64);
        var saved = new List<Response>();
        async Task<Response> FetchAsync(string url, CancellationToken ct) // a Task-returning call, as most are
        {
            await probe.RunAsync(0, probe.ReachedMax, ct);
            return new Response(url);
        }

        Task SaveAsync(Response[] batch)
        {
            batch.Length.Should().BeInRange(1, 100);
            saved.AddRange(batch);
            return Task.CompletedTask;
        }

        // doc: package-readme-itertools
        await foreach (Response[] batch in urls
            .Map(async (url, ct) => await FetchAsync(url, ct), maxConcurrency: 64)
            .Batch(maxSize: 100, maxDelay: TimeSpan.FromSeconds(1)))
        {
            await SaveAsync(batch);
        }
        // end doc

        saved.Select(r => r.Url).Should().Equal(Enumerable.Range(0, 250).Select(i => $"https://example.com/{i}"));
        probe.Peak.Should().Be(64);
    });
}

