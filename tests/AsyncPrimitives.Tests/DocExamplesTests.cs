namespace AsyncPrimitives.Tests;

/// <summary>
/// The code shown in docs/primitives.md and README.md, compiled and run. Edit a snippet here first, then copy it to the docs.
/// </summary>
public sealed class DocExamplesTests
{
    [Fact]
    public async Task LockExample_ConcurrentDeposits_AreSerializedAndNoneIsLost()
    {
        var balance = 0;
        // doc: lock
        var gate = new AsyncLock();

        async Task DepositAsync(int amount, CancellationToken cancellationToken)
        {
            using (await gate.AcquireAsync(cancellationToken))
            {
                int read = balance;
                await Task.Yield();           // other callers wait here, in FIFO order
                balance = read + amount;
            }
        }

        await Task.WhenAll(Enumerable.Range(0, 100).Select(_ => DepositAsync(1, CancellationToken.None)));
        // balance == 100
        // end doc
        balance.Should().Be(100);
    }

    [Fact]
    public async Task LockTimeoutExample_ExpiredWait_ThrowsAndHoldsNothing()
    {
        var time = new FakeTimeProvider();
        var gate = new AsyncLock(time);
        var balance = 0;
        // doc: lock-timeout
        async Task<bool> TryDepositAsync(int amount)
        {
            try
            {
                using (await gate.AcquireAsync(TimeSpan.FromSeconds(2)))
                {
                    balance += amount;
                    return true;
                }
            }
            catch (TimeoutException)
            {
                return false; // waited two seconds while someone else held the lock; holds nothing
            }
        }
        // end doc

        using (await gate.AcquireAsync())
        {
            Task<bool> deposit = TryDepositAsync(1);
            deposit.IsCompleted.Should().BeFalse();
            time.Advance(TimeSpan.FromSeconds(2));
            (await deposit).Should().BeFalse();
            gate.IsLocked.Should().BeTrue(); // still held here, not by the timed-out waiter
        }

        gate.IsLocked.Should().BeFalse();
        (await TryDepositAsync(1)).Should().BeTrue();
        balance.Should().Be(1);
    }

    [Fact]
    public async Task SemaphoreExample_NeverMoreThanFourCallsInFlight()
    {
        int inFlight = 0, peak = 0;
        // doc: semaphore
        var limit = new AsyncSemaphore(initialCount: 4);

        async Task<int> CallAsync(int request)
        {
            using (await limit.AcquireAsync())
            {
                int now = Interlocked.Increment(ref inFlight);
                Peak.Raise(ref peak, now); // never more than 4
                await Task.Yield();
                Interlocked.Decrement(ref inFlight);
                return request * 2;
            }
        }

        int[] results = await Task.WhenAll(Enumerable.Range(0, 50).Select(CallAsync));
        // end doc
        results.Should().Equal(Enumerable.Range(0, 50).Select(i => i * 2));
        peak.Should().BeInRange(1, 4);
    }

    [Fact]
    public void BoundedSemaphoreExample_ReleasePastTheBound_Throws()
    {
        // doc: bounded-semaphore
        var pool = new AsyncSemaphore(initialCount: 2, maxCount: 2); // Toro's BoundedSemaphore
        Action releaseTooMuch = () => pool.Release();
        releaseTooMuch.Should().Throw<SemaphoreFullException>();    // a bug caught, not a silent extra permit
        // end doc
        pool.CurrentCount.Should().Be(2);
    }

    [Fact]
    public async Task KeyedLockExample_UpdatesOfOneAccountAreSerialized_OthersRunAtOnce()
    {
        var balances = new Dictionary<string, int> { ["alice"] = 0, ["bob"] = 0 };
        // doc: keyed-lock
        var perAccount = new AsyncKeyedLock<string>();

        async Task DepositAsync(string account, int amount)
        {
            using (await perAccount.AcquireAsync(account))
            {
                int read;
                lock (balances) { read = balances[account]; }
                await Task.Yield();           // others wait here only if they deposit to the same account
                lock (balances) { balances[account] = read + amount; }
            }
        }

        await Task.WhenAll(Enumerable.Range(0, 100).Select(i => DepositAsync(i % 2 == 0 ? "alice" : "bob", 1)));
        // balances: alice 50, bob 50; perAccount.KeyCount == 0 (no key is kept once released)
        // end doc
        balances["alice"].Should().Be(50);
        balances["bob"].Should().Be(50);
        perAccount.KeyCount.Should().Be(0);
    }

    [Fact]
    public async Task ReaderWriterLockExample_ReadSeesTheWrite()
    {
        var cache = new Dictionary<string, int>();
        // doc: rwlock
        var rw = new AsyncReaderWriterLock();

        async Task<int?> ReadAsync(string key)
        {
            using (await rw.AcquireReadAsync())      // many readers at once
            {
                return cache.TryGetValue(key, out int value) ? value : null;
            }
        }

        async Task WriteAsync(string key, int value)
        {
            using (await rw.AcquireWriteAsync())     // alone; later readers wait behind a waiting writer
            {
                cache[key] = value;
            }
        }

        await WriteAsync("answer", 42);
        int? answer = await ReadAsync("answer");     // 42
        // end doc
        answer.Should().Be(42);
    }

    [Fact]
    public async Task ConditionExample_ConsumerWakesForTheProducedItem()
    {
        // doc: condition
        var condition = new AsyncCondition();
        var items = new Queue<int>();

        Task<int> consumer = Task.Run(async () =>
        {
            using (await condition.AcquireAsync())
            {
                await condition.WaitUntilAsync(() => items.Count > 0); // releases the lock while waiting
                return items.Dequeue();
            }
        });

        using (await condition.AcquireAsync())
        {
            items.Enqueue(42);
            condition.Notify();
        }

        int item = await consumer; // 42
        // end doc
        item.Should().Be(42);
    }

    [Fact]
    public async Task EventExample_SetWakesTheWaiter()
    {
        // doc: event
        var ready = new AsyncEvent();
        Task waiter = ready.WaitAsync().AsTask();
        ready.Set();          // wakes every waiter; later waits complete at once until Clear()
        await waiter;
        // end doc
        ready.IsSet.Should().BeTrue();
    }

    [Fact]
    public async Task ResultExample_ReaderGetsTheFirstValueOnly()
    {
        // doc: result
        var answer = new AsyncResult<int>();
        Task<int> reader = answer.GetAsync().AsTask();
        answer.Set(42);
        int value = await reader;                        // 42
        answer.TrySet(7).Should().BeFalse();             // one shot: the first value stays
        // end doc
        value.Should().Be(42);
    }

    [Fact]
    public async Task PackageReadmeExample_LockAndQueue()
    {
        CancellationToken cancellationToken = CancellationToken.None;
        // doc: package-readme-primitives
        var gate = new AsyncLock();
        using (await gate.AcquireAsync(cancellationToken))
        {
            // one caller at a time
        }

        var queue = new AsyncQueue<int>(maxSize: 100);
        await queue.PutAsync(42, cancellationToken);
        int item = await queue.GetAsync(TimeSpan.FromSeconds(5), cancellationToken);
        queue.TaskDone();
        // end doc

        item.Should().Be(42);
        queue.UnfinishedTasks.Should().Be(0);
        gate.TryAcquire(out AsyncLock.Releaser releaser).Should().BeTrue("the using block released the lock");
        releaser.Dispose();
    }
}
