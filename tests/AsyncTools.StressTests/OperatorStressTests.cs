using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using AsyncIterTools;
using AsyncIterTools.Tests;
using Xunit.Abstractions;

namespace AsyncTools.StressTests;

/// <summary>
/// The concurrent operators under random failures (of work and of sources), cancellation and early break. After each
/// run: the in-flight bound held, every source was disposed exactly once, no work is left running (every started piece
/// of work finished or observed cancellation before the operator returned), and the results are complete and in the
/// promised order (or a prefix of it, when the run failed, was cancelled or broke off).
/// </summary>
public sealed class OperatorStressTests(ITestOutputHelper output)
{
    private const int Rounds = 80;

    /// <summary>How a run ends.</summary>
    private enum Ending
    {
        Complete,
        WorkFails,
        SourceFails,
        Cancelled,
        Break,
    }

    [Fact]
    public Task GatherAsync_UnderFailuresAndCancellation_KeepsBoundOrderAndLeavesNothingRunning() =>
        Stress.RoundsAsync(output, "gather", Rounds, async (rng, because) =>
        {
            int n = rng.Next(0, 60);
            int max = rng.Next(1, 9);
            var ending = (Ending)rng.Next(4); // no source or break for GatherAsync
            int failAt = rng.Next(Math.Max(n, 1));
            var probe = new ConcurrencyProbe();
            using var cts = new CancellationTokenSource();
            var failure = new InvalidOperationException("work failure");
            int seed = rng.Next();
            var work = new TestWork.LazySequence<Func<CancellationToken, Task<int>>>(Enumerable.Range(0, n).Select(i =>
                (Func<CancellationToken, Task<int>>)(ct => WorkAsync(i, new Random(seed + i), probe, ct, () =>
                {
                    if (i == failAt && ending == Ending.WorkFails)
                    {
                        throw failure;
                    }

                    if (i == failAt && ending is Ending.Cancelled or Ending.SourceFails)
                    {
                        cts.Cancel();
                    }
                }))));

            Task<int[]> gather = AsyncIter.GatherAsync(work, rng.Next(4) == 0 ? null : max, cts.Token);
            Exception? error = await Record(gather);

            probe.InFlight.Should().Be(0, because + ": nothing is left running when GatherAsync completes");
            probe.Finished.Should().Be(probe.Started, because);
            work.Disposals.Should().Be(1, because);
            if (gather.IsCompletedSuccessfully)
            {
                gather.Result.Should().Equal(Enumerable.Range(0, n).Select(i => i * 2), because);
            }
            else if (ending == Ending.WorkFails)
            {
                error.Should().BeSameAs(failure, because);
            }
            else
            {
                error.Should().BeAssignableTo<OperationCanceledException>(because);
            }
        });

    /// <summary>
    /// AsCompleted's wait for the next completion ended by its deadline (work it owns) or by the caller's token (tasks it
    /// was handed) while completions arrive on other threads: every value yielded is a distinct completed one, the run
    /// ends with the value set complete or with the timeout or cancellation, and it ends at all: a completion handed over
    /// as the wait ended is neither lost (the drain of owned work would wait for it forever) nor delivered twice.
    /// </summary>
    [Fact]
    public Task AsCompleted_WaitEndingWhileCompletionsArrive_LosesAndDuplicatesNothing() =>
        Stress.RoundsAsync(output, "asCompletedWaitRace", Rounds, async (rng, because) =>
        {
            int n = rng.Next(1, 40);
            bool owned = rng.Next(2) == 0;
            int endAfter = rng.Next(0, n + 1);
            var gates = Enumerable.Range(0, n).Select(_ => new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously)).ToArray();
            var time = new FakeTimeProvider();
            using var cts = new CancellationTokenSource();
            IAsyncEnumerable<int> sequence = owned
                ? AsyncIter.AsCompleted(gates.Select((g, i) => (Func<CancellationToken, Task<int>>)(ct => Complete(g, ct))), null, TimeSpan.FromSeconds(1), time)
                : AsyncIter.AsCompleted(gates.Select(g => g.Task), null, time);

            // Completions arrive on pool threads; the deadline passes (or the caller cancels) after a random number of them.
            Task completer = Task.Run(() =>
            {
                for (int i = 0; i < n; i++)
                {
                    if (i == endAfter)
                    {
                        if (owned)
                        {
                            time.Advance(TimeSpan.FromSeconds(1));
                        }
                        else
                        {
                            cts.Cancel();
                        }
                    }

                    gates[i].TrySetResult(i);
                }
            });

            var seen = new List<int>();
            Task run = Task.Run(async () =>
            {
                await foreach (int value in sequence.WithCancellation(cts.Token))
                {
                    seen.Add(value);
                }
            });
            Exception? error = await Record(run);
            await completer.Bounded();

            run.IsCompleted.Should().BeTrue(because + ": the run ends (a lost completion would hang the drain)");
            seen.Should().OnlyHaveUniqueItems(because);
            seen.Should().BeSubsetOf(Enumerable.Range(0, n), because);
            if (error is null)
            {
                seen.Should().HaveCount(n, because + ": a run that ends normally yields every value");
            }
            else
            {
                error.Should().BeOfType(owned ? typeof(TimeoutException) : typeof(OperationCanceledException), because);
            }
        });

    /// <summary>Work that completes with its gate, or observes cancellation of its token.</summary>
    private static async Task<int> Complete(TaskCompletionSource<int> gate, CancellationToken cancellationToken) =>
        await gate.Task.WaitAsync(cancellationToken);

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public Task Map_UnderFailuresCancellationAndBreak_KeepsBoundOrderAndLeavesNothingRunning(bool ordered) =>
        Stress.RoundsAsync(output, ordered ? "map" : "mapUnordered", Rounds, async (rng, because) =>
        {
            int n = rng.Next(0, 60);
            int max = rng.Next(1, 9);
            var ending = (Ending)rng.Next(5);
            int failAt = rng.Next(Math.Max(n, 1));
            var source = ending == Ending.SourceFails
                ? Sources.Failing(Enumerable.Range(0, n), failAt, RandomMode(rng))
                : Sources.From(Enumerable.Range(0, n), RandomMode(rng));
            var probe = new ConcurrencyProbe();
            using var cts = new CancellationTokenSource();
            var failure = new InvalidOperationException("selector failure");
            int seed = rng.Next();
            Func<int, CancellationToken, ValueTask<int>> selector = (i, ct) => new ValueTask<int>(WorkAsync(i, new Random(seed + i), probe, ct, () =>
            {
                if (i == failAt && ending == Ending.WorkFails)
                {
                    throw failure;
                }
            }));
            IAsyncEnumerable<int> mapped = ordered ? source.Map(selector, max) : source.MapUnordered(selector, max);

            var results = new List<int>();
            Exception? error = await Record(async () =>
            {
                await foreach (int x in mapped.WithCancellation(cts.Token))
                {
                    probe.InFlight.Should().BeLessThanOrEqualTo(max, because);
                    results.Add(x);
                    if (results.Count == failAt + 1 && ending == Ending.Cancelled)
                    {
                        cts.Cancel();
                    }

                    if (results.Count == failAt + 1 && ending == Ending.Break)
                    {
                        break;
                    }
                }
            });

            probe.Peak.Should().BeLessThanOrEqualTo(max, because);
            probe.InFlight.Should().Be(0, because + ": nothing is left running once the enumeration ended");
            probe.Finished.Should().Be(probe.Started, because);
            source.Enumerators.Should().Be(1, because);
            source.Disposals.Should().Be(1, because);
            IEnumerable<int> expected = Enumerable.Range(0, n).Select(i => i * 2);
            if (error is null && ending is not Ending.Break and not Ending.Cancelled)
            {
                if (ordered)
                {
                    results.Should().Equal(expected, because);
                }
                else
                {
                    results.Should().BeEquivalentTo(expected, because);
                }
            }
            else
            {
                results.Should().OnlyHaveUniqueItems(because).And.BeSubsetOf(expected, because);
                if (ordered)
                {
                    results.Should().Equal(expected.Take(results.Count), because);
                }

                if (error is not null)
                {
                    CheckError(error, ending, failure, source.Failure, because);
                }
            }
        });

    [Fact]
    public Task Merge_UnderFailuresCancellationAndBreak_KeepsBoundPerSourceOrderAndDisposesEachOnce() =>
        Stress.RoundsAsync(output, "merge", Rounds, async (rng, because) =>
        {
            int k = rng.Next(1, 7);
            int max = rng.Next(1, k + 2);
            Ending ending = new[] { Ending.Complete, Ending.SourceFails, Ending.Cancelled, Ending.Break }[rng.Next(4)];
            int failing = rng.Next(k);
            int failAt = rng.Next(0, 10);
            var probe = new ConcurrencyProbe();
            int[] counts = Enumerable.Range(0, k).Select(_ => rng.Next(0, 15)).ToArray();
            var sources = Enumerable.Range(0, k).Select(s =>
            {
                IEnumerable<int> items = Enumerable.Range(s * 1000, counts[s]);
                return s == failing && ending == Ending.SourceFails
                    ? Sources.Failing(items, failAt, RandomMode(rng))
                    : Sources.From(items, RandomMode(rng));
            }).ToArray();
            var lazy = new TestWork.LazySequence<IAsyncEnumerable<int>>(sources.Select((s, i) => Probed(s, probe, i)));
            bool paramsOverload = rng.Next(3) == 0;
            IAsyncEnumerable<int> merged = paramsOverload ? AsyncIter.Merge(lazy.ToArray()) : AsyncIter.Merge(lazy, max);
            int limit = paramsOverload ? k : max;
            int stopAfter = rng.Next(0, 20);
            using var cts = new CancellationTokenSource();

            var results = new List<int>();
            Exception? error = await Record(async () =>
            {
                await foreach (int x in merged.WithCancellation(cts.Token))
                {
                    results.Add(x);
                    if (results.Count == stopAfter && ending == Ending.Cancelled)
                    {
                        cts.Cancel();
                    }

                    if (results.Count == stopAfter && ending == Ending.Break)
                    {
                        break;
                    }
                }
            });

            probe.Peak.Should().BeLessThanOrEqualTo(limit, because);
            probe.InFlight.Should().Be(0, because + ": every started source finished before the merge returned");
            lazy.Disposals.Should().Be(1, because);
            foreach (TrackingSource<int> source in sources)
            {
                source.Disposals.Should().Be(source.Enumerators, because + ": every started source is disposed exactly once");
                source.Enumerators.Should().BeLessThanOrEqualTo(1, because);
            }

            results.Should().OnlyHaveUniqueItems(because);
            foreach (IGrouping<int, int> perSource in results.GroupBy(x => x / 1000))
            {
                perSource.Should().BeInAscendingOrder(because + ": each source's items keep their order");
            }

            if (error is null && ending is Ending.Complete)
            {
                results.Should().BeEquivalentTo(Enumerable.Range(0, k).SelectMany(s => Enumerable.Range(s * 1000, counts[s])), because);
                sources.Should().NotContain(s => s.Enumerators != 1, because);
            }
            else if (error is not null)
            {
                CheckError(error, ending, null, sources[failing].Failure, because);
            }
        });

    [Fact]
    public Task Tee_ConcurrentCopiesWithFailuresAndEarlyExit_SeeTheSameSequenceAndDisposeTheSourceOnce() =>
        Stress.RoundsAsync(output, "tee", Rounds, async (rng, because) =>
        {
            int n = rng.Next(0, 50);
            int copies = rng.Next(1, 5);
            int? maxBuffer = rng.Next(2) == 0 ? null : rng.Next(1, 5);
            bool sourceFails = rng.Next(3) == 0;
            int failAt = rng.Next(Math.Max(n, 1));
            var source = sourceFails ? Sources.Failing(Enumerable.Range(0, n), failAt, RandomMode(rng)) : Sources.From(Enumerable.Range(0, n), RandomMode(rng));
            IAsyncEnumerable<int>[] tee = source.Tee(copies, maxBuffer);

            // Each copy on its own task; some break early, some are cancelled.
            var outcomes = new ConcurrentDictionary<int, (List<int> Items, Exception? Error, int StopAt, bool Cancel)>();
            Task[] readers = tee.Select((copy, c) =>
            {
                int stopAt = rng.Next(3) == 0 && n > 0 ? rng.Next(1, n + 1) : -1;
                bool cancel = stopAt >= 0 && rng.Next(2) == 0;
                return Task.Run(async () =>
                {
                    var items = new List<int>();
                    using var cts = new CancellationTokenSource();
                    Exception? error = await Record(async () =>
                    {
                        await foreach (int x in copy.WithCancellation(cts.Token))
                        {
                            items.Add(x);
                            if (items.Count == stopAt)
                            {
                                if (cancel)
                                {
                                    cts.Cancel();
                                }
                                else
                                {
                                    break;
                                }
                            }
                        }
                    });
                    outcomes[c] = (items, error, stopAt, cancel);
                });
            }).ToArray();
            await Task.WhenAll(readers).Bounded();

            source.Enumerators.Should().BeLessThanOrEqualTo(1, because);
            source.Disposals.Should().Be(source.Enumerators, because + ": the last copy out disposes the source exactly once");
            foreach ((int c, (List<int> items, Exception? error, int stopAt, bool cancel)) in outcomes)
            {
                int expectedCount = sourceFails ? failAt : n; // a failing source throws at failAt, even past its items
                items.Should().Equal(Enumerable.Range(0, items.Count), $"{because}: copy {c}");
                if (stopAt < 0 || stopAt > expectedCount)
                {
                    items.Count.Should().Be(expectedCount, $"{because}: copy {c} reads everything");
                    if (sourceFails)
                    {
                        error.Should().BeSameAs(source.Failure, $"{because}: copy {c} sees the failure at its position");
                    }
                    else
                    {
                        error.Should().BeNull($"{because}: copy {c}");
                    }
                }
                else if (!cancel)
                {
                    items.Count.Should().Be(stopAt, because);
                }
            }
        });

    [Fact]
    public Task Prefetch_UnderFailuresCancellationAndBreak_KeepsOrderAndBoundAndStopsTheProducer() =>
        Stress.RoundsAsync(output, "prefetch", Rounds, async (rng, because) =>
        {
            int n = rng.Next(0, 80);
            int capacity = rng.Next(1, 6);
            var ending = (Ending)rng.Next(5);
            int failAt = rng.Next(Math.Max(n, 1));
            var source = ending == Ending.SourceFails ? Sources.Failing(Enumerable.Range(0, n), failAt, RandomMode(rng)) : Sources.From(Enumerable.Range(0, n), RandomMode(rng));
            using var cts = new CancellationTokenSource();
            var results = new List<int>();
            Exception? error = await Record(async () =>
            {
                await foreach (int x in source.Prefetch(capacity).WithCancellation(cts.Token))
                {
                    results.Add(x);
                    source.Produced.Should().BeLessThanOrEqualTo(results.Count + capacity + 1, because + ": read-ahead is bounded");
                    if (results.Count == failAt + 1 && ending == Ending.Cancelled)
                    {
                        cts.Cancel();
                    }

                    if (results.Count == failAt + 1 && ending == Ending.Break)
                    {
                        break;
                    }

                    if (rng.Next(4) == 0)
                    {
                        await Task.Yield();
                    }
                }
            });

            source.Enumerators.Should().Be(1, because);
            source.Disposals.Should().Be(1, because + ": the producer is stopped and the source disposed when the enumeration ends");
            results.Should().Equal(Enumerable.Range(0, results.Count), because);
            if (error is null && ending is Ending.Complete or Ending.WorkFails)
            {
                results.Should().HaveCount(n, because);
            }
            else if (error is not null)
            {
                CheckError(error, ending, null, source.Failure, because);
            }
        });

    [Fact]
    public Task TimedBatch_UnderFailuresCancellationAndBreak_KeepsEveryItemInOrderAndDisposesTheSourceOnce() =>
        Stress.RoundsAsync(output, "batch(size,delay)", Rounds, async (rng, because) =>
        {
            int n = rng.Next(0, 80);
            int size = rng.Next(1, 6);
            var ending = (Ending)rng.Next(5);
            int failAt = rng.Next(Math.Max(n, 1));
            var source = ending == Ending.SourceFails ? Sources.Failing(Enumerable.Range(0, n), failAt, RandomMode(rng)) : Sources.From(Enumerable.Range(0, n), RandomMode(rng));
            TimeSpan delay = rng.Next(3) == 0 ? Timeout.InfiniteTimeSpan : TimeSpan.FromMilliseconds(rng.Next(1, 3));
            using var cts = new CancellationTokenSource();
            var batches = new List<int[]>();
            Exception? error = await Record(async () =>
            {
                await foreach (int[] batch in source.Batch(size, delay).WithCancellation(cts.Token))
                {
                    batches.Add(batch);
                    if (batches.Count == (failAt / size) + 1 && ending == Ending.Cancelled)
                    {
                        cts.Cancel();
                    }

                    if (batches.Count == (failAt / size) + 1 && ending == Ending.Break)
                    {
                        break;
                    }
                }
            });

            source.Enumerators.Should().Be(1, because);
            source.Disposals.Should().Be(1, because);
            batches.Should().NotContain(b => b.Length < 1 || b.Length > size, because + ": never empty, never over size");
            int[] flat = batches.SelectMany(b => b).ToArray();
            flat.Should().Equal(Enumerable.Range(0, flat.Length), because);
            if (error is null && ending is Ending.Complete or Ending.WorkFails)
            {
                flat.Should().HaveCount(n, because);
            }
            else if (error is not null)
            {
                CheckError(error, ending, null, source.Failure, because);
            }
        });

    /// <summary>A piece of work: completes synchronously, after a yield, or on another thread; fails or cancels by <paramref name="act"/>.</summary>
    private static async Task<int> WorkAsync(int i, Random r, ConcurrencyProbe probe, CancellationToken ct, Action act)
    {
        probe.Enter(i);
        bool cancelled = false;
        try
        {
            switch (r.Next(4))
            {
                case 0:
                    break;
                case 1:
                    await Task.Yield();
                    break;
                case 2:
                    await Task.Run(() => { }, CancellationToken.None);
                    break;
                default:
                    for (int spins = r.Next(1, 4); spins > 0; spins--)
                    {
                        await Task.Yield();
                    }

                    break;
            }

            act();
            ct.ThrowIfCancellationRequested();
            return i * 2;
        }
        catch (OperationCanceledException)
        {
            cancelled = true;
            throw;
        }
        finally
        {
            probe.Exit(cancelled);
        }
    }

    private static async IAsyncEnumerable<int> Probed(TrackingSource<int> source, ConcurrencyProbe probe, int id, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        probe.Enter(id);
        try
        {
            await foreach (int x in source.WithCancellation(cancellationToken))
            {
                yield return x;
            }
        }
        finally
        {
            probe.Exit();
        }
    }

    private static void CheckError(Exception? error, Ending ending, Exception? workFailure, Exception? sourceFailure, string because)
    {
        switch (ending)
        {
            case Ending.WorkFails:
                error.Should().BeSameAs(workFailure, because);
                break;
            case Ending.SourceFails:
                error.Should().BeSameAs(sourceFailure, because);
                break;
            case Ending.Cancelled:
                error.Should().BeAssignableTo<OperationCanceledException>(because);
                break;
            default:
                error.Should().BeNull(because);
                break;
        }
    }

    private static SourceMode RandomMode(Random rng) => rng.Next(2) == 0 ? SourceMode.Synchronous : SourceMode.Yielding;

    private static async Task<Exception?> Record(Func<Task> run)
    {
        try
        {
            await run().Bounded();
            return null;
        }
        catch (Exception ex) when (ex is not Xunit.Sdk.XunitException)
        {
            return ex;
        }
    }

    private static async Task<Exception?> Record(Task run)
    {
        try
        {
            await run.Bounded();
            return null;
        }
        catch (Exception ex) when (ex is not Xunit.Sdk.XunitException)
        {
            return ex;
        }
    }
}
