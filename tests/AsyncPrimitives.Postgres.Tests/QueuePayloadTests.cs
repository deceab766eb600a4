using System.Text.Json;
using System.Text.Json.Serialization;
using AsyncPrimitives.Postgres.Tests.Support;

namespace AsyncPrimitives.Postgres.Tests;

/// <summary>
/// An item is stored as the JSON text System.Text.Json wrote for it, and read back from that text: whatever
/// System.Text.Json writes and reads comes back as put, including what depends on the order of properties (a type
/// discriminator must come first) and strings PostgreSQL's <c>jsonb</c> would refuse (U+0000).
/// </summary>
public sealed class QueuePayloadTests(PostgresServer server) : PostgresTest(server)
{
    [JsonPolymorphic]
    [JsonDerivedType(typeof(Email), "email")]
    [JsonDerivedType(typeof(Sms), "sms")]
    public abstract record Job;

    public sealed record Email(string To, string Subject) : Job;

    public sealed record Sms(string To) : Job;

    [JsonPolymorphic]
    [JsonDerivedType(typeof(Reminder), "reminder")]
    public record Message(string Text);

    public sealed record Reminder(string Text, DateTimeOffset At) : Message(Text);

    [PostgresFact]
    public async Task ItemsOfAnAbstractPolymorphicType_ComeBackAsPut()
    {
        Job[] jobs = [new Email("a@example.com", "hello"), new Sms("+100")];
        (await PutAndGetAsync(jobs)).Should().Equal(jobs);
    }

    [PostgresFact]
    public async Task ItemsOfAConcretePolymorphicType_ComeBackAsPut_TheBaseAndTheDerived()
    {
        Message[] messages = [new Reminder("call", DateTimeOffset.UnixEpoch), new Message("plain")];
        (await PutAndGetAsync(messages)).Should().Equal(messages);
    }

    [PostgresFact]
    public async Task AStringWithU0000_ComesBackAsPut()
    {
        (await PutAndGetAsync(["a\0b"])).Should().Equal("a\0b");
    }

    [PostgresFact]
    public async Task TheStoredPayload_IsTheTextSystemTextJsonWrote()
    {
        Member member = await JoinAsync();
        PostgresQueue<Job> queue = member.Coordinator.CreateQueue<Job>("jobs");
        Job job = new Email("z@example.com", "a subject longer than the keys");
        await queue.PutAsync(job);

        (await ScalarAsync<string>("SELECT payload::text FROM @schema.queue_items"))
            .Should().Be(JsonSerializer.Serialize(job), "the properties keep their order and nothing is normalized");
    }

    /// <summary>Puts <paramref name="items"/> on a new queue, takes them in one get, completes them, and returns what
    /// the get read.</summary>
    private async Task<T[]> PutAndGetAsync<T>(T[] items)
    {
        Member member = await JoinAsync();
        PostgresQueue<T> queue = member.Coordinator.CreateQueue<T>("items");
        await queue.PutManyAsync(items);
        IReadOnlyList<PostgresDelivery<T>> deliveries = await queue.GetManyAsync(items.Length, Bound);
        await queue.CompleteManyAsync(deliveries);
        (await queue.UnfinishedAsync()).Should().Be(0);
        return [.. deliveries.Select(d => d.Item)];
    }
}
