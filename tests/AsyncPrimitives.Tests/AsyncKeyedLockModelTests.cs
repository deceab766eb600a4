namespace AsyncPrimitives.Tests;

/// <summary>
/// A single-threaded model check of AsyncKeyedLock over random histories (2,000 seeds): per-key FIFO, maxCountPerKey,
/// TryAcquire, timeouts (FakeTimeProvider), cancellations, releases and releasers disposed twice (primitives.md: one
/// disposed again after its key was freed throws and releases nothing; one disposed again while its key is held releases
/// a hold), KeyCount and IsHeld after every step. Every wait's outcome is decided by the call that decides it (a grant,
/// a cancel, a timer), so its task's state is checked right after that call.
/// </summary>
public sealed class AsyncKeyedLockModelTests
{
    private sealed class Wait
    {
        public int Id;
        public int Key;
        public ValueTask<AsyncKeyedLock<int>.Releaser> Task;
        public CancellationTokenSource? Cts;
        public DateTimeOffset? Due;
        public bool Decided;
        public string Expected = "";
    }

    private sealed class Held
    {
        public AsyncKeyedLock<int>.Releaser Releaser;
        public int Key;
        public int Incarnation;
    }

    [Fact]
    public void RandomHistories_MatchAModelOfPerKeyFifoLines()
    {
        for (int seed = 0; seed < 2000; seed++)
        {
            Run(seed);
        }
    }

    private static void Run(int seed)
    {
        var rnd = new Random(seed);
        var time = new FakeTimeProvider();
        int max = rnd.Next(1, 4);
        int keys = rnd.Next(1, 7);
        var keyed = new AsyncKeyedLock<int>(max, timeProvider: time);

        var holders = new int[keys];
        var incarnation = new int[keys];
        int nextIncarnation = 1;
        var waiters = Enumerable.Range(0, keys).Select(_ => new List<Wait>()).ToArray();
        var pending = new List<Wait>();
        var held = new List<Held>(); // every releaser ever got, also disposed ones (to dispose again)
        var incarnationOf = new Dictionary<Wait, int>();
        var log = new List<string>();
        int nextId = 0;

        void Fail(string message) => throw new Xunit.Sdk.XunitException($"seed {seed} max {max} keys {keys}: {message}\n{string.Join("\n", log)}");

        void Check(string step)
        {
            log.Add(step);
            foreach (Wait w in pending.ToList())
            {
                if (w.Decided != w.Task.IsCompleted)
                {
                    Fail($"wait {w.Id} on key {w.Key}: model decided={w.Decided} ({w.Expected}), real completed={w.Task.IsCompleted}");
                }

                if (w.Decided)
                {
                    pending.Remove(w);
                    string got;
                    try
                    {
                        AsyncKeyedLock<int>.Releaser r = w.Task.GetAwaiter().GetResult();
                        got = "served";
                        held.Add(new Held { Releaser = r, Key = w.Key, Incarnation = incarnationOf[w] });
                    }
                    catch (Exception e)
                    {
                        got = e.GetType().Name;
                    }

                    if (got != w.Expected)
                    {
                        Fail($"wait {w.Id} on key {w.Key}: expected {w.Expected}, got {got}");
                    }
                }
            }

            int keyCount = Enumerable.Range(0, keys).Count(k => holders[k] > 0);
            if (keyed.KeyCount != keyCount)
            {
                Fail($"KeyCount {keyed.KeyCount}, model {keyCount} after {step}");
            }

            for (int k = 0; k < keys; k++)
            {
                if (keyed.IsHeld(k) != holders[k] > 0)
                {
                    Fail($"IsHeld({k}) {keyed.IsHeld(k)}, model holders {holders[k]} after {step}");
                }
            }
        }

        void Enter(int key)
        {
            if (holders[key] == 0)
            {
                incarnation[key] = nextIncarnation++;
            }

            holders[key]++;
        }

        for (int step = 0; step < 80; step++)
        {
            int op = rnd.Next(100);
            int key = rnd.Next(keys);
            if (op < 30)
            {
                CancellationTokenSource? cts = rnd.Next(2) == 0 ? new CancellationTokenSource() : null;
                TimeSpan timeout = rnd.Next(3) == 0 ? TimeSpan.FromSeconds(rnd.Next(1, 30)) : Timeout.InfiniteTimeSpan;
                var w = new Wait { Id = nextId++, Key = key, Cts = cts, Due = timeout == Timeout.InfiniteTimeSpan ? null : time.GetUtcNow() + timeout };
                w.Task = keyed.AcquireAsync(key, timeout, cts?.Token ?? default);
                pending.Add(w);
                if (waiters[key].Count == 0 && holders[key] < max)
                {
                    Enter(key);
                    incarnationOf[w] = incarnation[key];
                    w.Decided = true;
                    w.Expected = "served";
                }
                else
                {
                    waiters[key].Add(w);
                }

                Check($"acquire w{w.Id} key {key} timeout {timeout}");
            }
            else if (op < 40)
            {
                bool expected = waiters[key].Count == 0 && holders[key] < max;
                bool actual = keyed.TryAcquire(key, out AsyncKeyedLock<int>.Releaser r);
                if (actual != expected)
                {
                    Fail($"TryAcquire({key}) {actual}, model {expected}");
                }

                if (actual)
                {
                    Enter(key);
                    held.Add(new Held { Releaser = r, Key = key, Incarnation = incarnation[key] });
                }

                Check($"TryAcquire({key}) -> {actual}");
            }
            else if (op < 72)
            {
                if (held.Count == 0)
                {
                    continue;
                }

                Held h = held[rnd.Next(held.Count)];
                if (rnd.Next(4) != 0)
                {
                    held.Remove(h); // usually disposed once; sometimes kept to be disposed again later
                }

                int k = h.Key;
                string expected;
                if (holders[k] > 0 && incarnation[k] == h.Incarnation)
                {
                    expected = "ok";
                    if (waiters[k].Count > 0)
                    {
                        Wait next = waiters[k][0];
                        waiters[k].RemoveAt(0);
                        next.Decided = true;
                        next.Expected = "served";
                        incarnationOf[next] = incarnation[k];
                    }
                    else
                    {
                        holders[k]--;
                    }
                }
                else
                {
                    expected = "SynchronizationLockException";
                }

                string actual;
                try
                {
                    h.Releaser.Dispose();
                    actual = "ok";
                }
                catch (Exception e)
                {
                    actual = e.GetType().Name;
                }

                if (actual != expected)
                {
                    Fail($"Dispose of a releaser of key {k} (incarnation {h.Incarnation}, current {incarnation[k]}, holders {holders[k]}): {actual}, model {expected}");
                }

                Check($"dispose key {k} inc {h.Incarnation} -> {actual}");
            }
            else if (op < 86)
            {
                var cancellable = waiters.SelectMany(x => x).Where(x => x.Cts is not null).ToList();
                if (cancellable.Count > 0)
                {
                    Wait w = cancellable[rnd.Next(cancellable.Count)];
                    waiters[w.Key].Remove(w);
                    w.Decided = true;
                    w.Expected = "OperationCanceledException";
                    w.Cts!.Cancel();
                    Check($"cancel w{w.Id}");
                }
            }
            else
            {
                var timed = waiters.SelectMany(x => x).Where(x => x.Due is not null).ToList();
                if (timed.Count > 0)
                {
                    DateTimeOffset to = timed.Min(x => x.Due!.Value);
                    foreach (Wait w in waiters.SelectMany(x => x).Where(x => x.Due <= to).ToList())
                    {
                        waiters[w.Key].Remove(w);
                        w.Decided = true;
                        w.Expected = "TimeoutException";
                    }

                    time.Advance(to - time.GetUtcNow());
                    Check($"advance to {to:HH:mm:ss}");
                }
            }
        }
    }
}
