using System.Collections.Concurrent;
using AsyncPrimitives;
using BenchmarkDotNet.Attributes;

namespace AsyncTools.Benchmarks;

/// <summary>
/// A lock per key, against the usual hand-written one (<see cref="RefCountedSemaphores{TKey}"/>: a
/// <c>ConcurrentDictionary</c> of reference-counted <c>SemaphoreSlim</c>s, removed at the last release, as most blog posts
/// write it; the AsyncKeyedLock package, which can also pool its per-key objects, is not measured). Target: ≤ 1.0 × its
/// time, fewer bytes.
/// Uncontended: acquire + release of a key nobody holds (so the key is created and removed each time), 1024 keys in turn.
/// </summary>
public class UncontendedKeyedLockBenchmarks
{
    private readonly string[] _keys = Enumerable.Range(0, 1024).Select(i => $"key-{i}").ToArray();
    private readonly RefCountedSemaphores<string> _handWritten = new();
    private readonly AsyncKeyedLock<string> _keyed = new();
    private int _next;

    [Benchmark(Baseline = true)]
    public async Task RefCountedSemaphoreSlims_AcquireAsync_Dispose()
    {
        using (await _handWritten.AcquireAsync(NextKey()))
        {
        }
    }

    [Benchmark]
    public async Task AsyncKeyedLock_AcquireAsync_Dispose()
    {
        using (await _keyed.AcquireAsync(NextKey()))
        {
        }
    }

    private string NextKey() => _keys[_next++ & 1023];
}

/// <summary>
/// 8 tasks × 1000 × (acquire one of 4 keys; <c>Task.Yield</c>; release), per acquire: each key is contended by about two
/// tasks at a time, so most acquires wait and every release of a contended key hands it over.
/// </summary>
public class ContendedKeyedLockBenchmarks
{
    private const int Tasks = 8;
    private const int Iterations = 1000;
    private const int Keys = 4;

    [Benchmark(Baseline = true, OperationsPerInvoke = Tasks * Iterations)]
    public Task RefCountedSemaphoreSlims()
    {
        var locks = new RefCountedSemaphores<int>();
        return Run(async task =>
        {
            for (int i = 0; i < Iterations; i++)
            {
                using (await locks.AcquireAsync((task + i) % Keys))
                {
                    await Task.Yield();
                }
            }
        });
    }

    [Benchmark(OperationsPerInvoke = Tasks * Iterations)]
    public Task AsyncKeyedLock()
    {
        var locks = new AsyncKeyedLock<int>();
        return Run(async task =>
        {
            for (int i = 0; i < Iterations; i++)
            {
                using (await locks.AcquireAsync((task + i) % Keys))
                {
                    await Task.Yield();
                }
            }
        });
    }

    private static Task Run(Func<int, Task> body)
    {
        var tasks = new Task[Tasks];
        for (int t = 0; t < Tasks; t++)
        {
            int task = t;
            tasks[t] = Task.Run(() => body(task));
        }

        return Task.WhenAll(tasks);
    }
}

/// <summary>
/// The usual hand-written lock per key: a <see cref="ConcurrentDictionary{TKey, TValue}"/> of <see cref="SemaphoreSlim"/>s,
/// each with a reference count (holders and waiters) under a lock on its entry; the last release removes the entry. An
/// entry found already removed is retried. The synchronous path of <see cref="SemaphoreSlim.WaitAsync(CancellationToken)"/>
/// returns without an async state machine, as a careful hand-written version would.
/// </summary>
public sealed class RefCountedSemaphores<TKey>
    where TKey : notnull
{
    private readonly ConcurrentDictionary<TKey, Entry> _entries = new();

    public ValueTask<Releaser> AcquireAsync(TKey key, CancellationToken cancellationToken = default)
    {
        Entry entry = Rent(key);
        Task wait = entry.Semaphore.WaitAsync(cancellationToken);
        return wait.IsCompletedSuccessfully ? new ValueTask<Releaser>(new Releaser(this, key, entry)) : WaitAsync(wait, key, entry);
    }

    private async ValueTask<Releaser> WaitAsync(Task wait, TKey key, Entry entry)
    {
        try
        {
            await wait.ConfigureAwait(false);
        }
        catch
        {
            Return(key, entry);
            throw;
        }

        return new Releaser(this, key, entry);
    }

    private Entry Rent(TKey key)
    {
        while (true)
        {
            if (_entries.TryGetValue(key, out Entry? entry))
            {
                lock (entry)
                {
                    if (!entry.Removed)
                    {
                        entry.References++;
                        return entry;
                    }
                }
            }

            entry = new Entry { References = 1 };
            if (_entries.TryAdd(key, entry))
            {
                return entry;
            }
        }
    }

    private void Return(TKey key, Entry entry)
    {
        lock (entry)
        {
            if (--entry.References == 0)
            {
                entry.Removed = true;
                _entries.TryRemove(new KeyValuePair<TKey, Entry>(key, entry));
            }
        }
    }

    public readonly struct Releaser(RefCountedSemaphores<TKey> owner, TKey key, Entry entry) : IDisposable
    {
        public void Dispose()
        {
            entry.Semaphore.Release();
            owner.Return(key, entry);
        }
    }

    public sealed class Entry
    {
        public readonly SemaphoreSlim Semaphore = new(1, 1);
        public int References;
        public bool Removed;
    }
}
